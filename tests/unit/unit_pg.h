/* For the unit tests that need a PostgreSQL server: TESSERA_TEST_DB_URL (set by
 * scripts/test) names one; each test program makes a database of its own on it.
 * Header-only (static functions), included by the test programs that use it,
 * after <cmocka.h> (the connection helpers fail the running test). */
#ifndef TS_UNIT_PG_H
#define TS_UNIT_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/db.h"
#include "io/migrate.h"

/* Runs sql on its own connection; 0, or -1 with the error on stderr. */
static int unit_pg_exec(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    if (!ok)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    PQfinish(c);
    return ok ? 0 : -1;
}

/* Whether TESSERA_TEST_DB_URL names a server that answers; says why not on
 * stderr (the program then exits 77: CTest counts it as skipped). */
static bool unit_pg_available(void)
{
    const char *base = getenv("TESSERA_TEST_DB_URL");
    if (base && unit_pg_exec(base, "SELECT 1") == 0)
        return true;
    fprintf(stderr, "TESSERA_TEST_DB_URL not set or unreachable: skipped\n");
    return false;
}

/* Makes the database <prefix>_<pid> and writes its conninfo into url. */
static int unit_pg_new_database(const char *prefix, char *url, size_t size)
{
    const char *base = getenv("TESSERA_TEST_DB_URL");
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s_%d", prefix, (int)getpid());
    if (unit_pg_exec(base, sql))
        return -1;
    snprintf(url, size, "%s dbname=%s_%d", base, prefix, (int)getpid());
    return 0;
}

/* A pool of size connections on url (which must outlive the pool: the pool
 * keeps the pointer) with the migrations applied; 0, or -1 with the error on
 * stderr. */
static inline int unit_pg_pool(const char *url, int size, const char *isolation, ts_db_pool **out)
{
    ts_db_options opt = {.conninfo = url,
                         .size = size,
                         .max_retries = 2,
                         .isolation = isolation,
                         .connect_timeout_s = 5,
                         .retry_base_ms = 10};
    ts_err err;
    if (ts_db_pool_new(&opt, out, &err) || ts_db_migrate(*out, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

/* A connection of the test's own to url; fails the test if there is none. */
static inline PGconn *unit_pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    return c;
}

/* Runs sql on c; fails the test, naming the statement, if it fails. */
static inline void unit_pg_exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

#endif
