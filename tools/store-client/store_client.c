/* tessera-store-client: sends DICOM files to ingest's store socket on the bus
 * (the path the REST upload takes) and prints one line per file:
 *   <file> <status> <instance id> <error>
 * Used by the integration tests and handy for scripts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/bus.h"
#include "base/log.h"
#include "tessera.pb-c.h"

static const char *status_name(Tessera__StoreStatus s)
{
    switch (s) {
    case TESSERA__STORE_STATUS__STORE_STORED:
        return "Success";
    case TESSERA__STORE_STATUS__STORE_ALREADY_STORED:
        return "AlreadyStored";
    case TESSERA__STORE_STATUS__STORE_INVALID_DICOM:
        return "InvalidDicom";
    case TESSERA__STORE_STATUS__STORE_DB_UNAVAILABLE:
        return "DatabaseUnavailable";
    case TESSERA__STORE_STATUS__STORE_STORAGE_ERROR:
        return "StorageError";
    case TESSERA__STORE_STATUS__STORE_TOO_LARGE:
        return "TooLarge";
    default:
        return "InternalError";
    }
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    if (!*data)
        abort();
    *len = fread(*data, 1, (size_t)n, f);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s BUS-URL|HOST:PORT FILE...\n", argv[0]);
        return 2;
    }
    ts_log_init("store-client", TS_LOG_WARN);
    ts_err err;
    ts_bus_client *c;
    if (ts_bus_client_new(argv[1], 5, 1u << 30, &c, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int failures = 0;
    for (int i = 2; i < argc; i++) {
        Tessera__StoreRequest req = TESSERA__STORE_REQUEST__INIT;
        uint8_t *data;
        size_t len;
        if (read_file(argv[i], &data, &len)) {
            printf("%s Unreadable - cannot read the file\n", argv[i]);
            failures++;
            continue;
        }
        req.dicom.data = data;
        req.dicom.len = len;
        req.origin = "RestApi";
        ProtobufCMessage *reply;
        if (ts_bus_call(c, &req.base, &tessera__store_reply__descriptor, &reply, 60000, &err)) {
            printf("%s BusError - %s\n", argv[i], err.msg);
            failures++;
        } else {
            Tessera__StoreReply *r = (Tessera__StoreReply *)reply;
            printf("%s %s %s %s\n", argv[i], status_name(r->status),
                   *r->instance_id ? r->instance_id : "-", r->error);
            if (r->status != TESSERA__STORE_STATUS__STORE_STORED &&
                r->status != TESSERA__STORE_STATUS__STORE_ALREADY_STORED)
                failures++;
            protobuf_c_message_free_unpacked(reply, NULL);
        }
        free(data);
    }
    ts_bus_client_free(c);
    return failures ? 1 : 0;
}
