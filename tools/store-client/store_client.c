/* tessera-store-client: sends DICOM files to ingest's store socket on the bus
 * (the path the REST upload takes) and prints one line per file:
 *   <file> <status> <instance id> <error>
 * With --batch, all files go in one StoreBatchRequest (as a jobs worker sends
 * a chunk of modified copies), answered item by item.
 * Used by the integration tests and handy for scripts. */
#include <stdbool.h>
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

/* Prints one reply's line; true when the file was stored (or already was). */
static bool print_reply(const char *file, const Tessera__StoreReply *r)
{
    printf("%s %s %s %s\n", file, status_name(r->status), *r->instance_id ? r->instance_id : "-",
           r->error);
    return r->status == TESSERA__STORE_STATUS__STORE_STORED ||
           r->status == TESSERA__STORE_STATUS__STORE_ALREADY_STORED;
}

/* All files in one StoreBatchRequest; the number of failures. */
static int store_batch(ts_bus_client *c, char **files, int n)
{
    Tessera__StoreRequest *items = calloc((size_t)n, sizeof(*items));
    Tessera__StoreRequest **ptrs = calloc((size_t)n, sizeof(*ptrs));
    if (!items || !ptrs)
        abort();
    int failures = 0;
    for (int i = 0; i < n; i++) {
        tessera__store_request__init(&items[i]);
        items[i].origin = "RestApi";
        ptrs[i] = &items[i];
        if (read_file(files[i], &items[i].dicom.data, &items[i].dicom.len)) {
            printf("%s Unreadable - cannot read the file\n", files[i]);
            failures = n; /* nothing sent */
        }
    }
    if (failures)
        goto out;
    Tessera__StoreBatchRequest req = TESSERA__STORE_BATCH_REQUEST__INIT;
    req.n_items = (size_t)n;
    req.items = ptrs;
    ProtobufCMessage *reply;
    ts_err err;
    if (ts_bus_call(c, &req.base, &tessera__store_batch_reply__descriptor, &reply, 60000, &err)) {
        for (int i = 0; i < n; i++)
            printf("%s BusError - %s\n", files[i], err.msg);
        failures = n;
    } else {
        Tessera__StoreBatchReply *r = (Tessera__StoreBatchReply *)reply;
        for (int i = 0; i < n; i++) {
            if ((size_t)i >= r->n_replies) {
                printf("%s BusError - no answer for this item\n", files[i]);
                failures++;
            } else if (!print_reply(files[i], r->replies[i])) {
                failures++;
            }
        }
        protobuf_c_message_free_unpacked(reply, NULL);
    }
out:
    for (int i = 0; i < n; i++)
        free(items[i].dicom.data);
    free(ptrs);
    free(items);
    return failures;
}

int main(int argc, char **argv)
{
    bool batch = argc > 2 && strcmp(argv[2], "--batch") == 0;
    if (argc < 3 + batch) {
        fprintf(stderr, "usage: %s BUS-URL|HOST:PORT [--batch] FILE...\n", argv[0]);
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
    if (batch)
        failures = store_batch(c, argv + 3, argc - 3);
    for (int i = 2; !batch && i < argc; i++) {
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
            if (!print_reply(argv[i], (Tessera__StoreReply *)reply))
                failures++;
            protobuf_c_message_free_unpacked(reply, NULL);
        }
        free(data);
    }
    ts_bus_client_free(c);
    return failures ? 1 : 0;
}
