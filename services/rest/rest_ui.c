/* The web UI's static files (see rest_ui.h). No server-side logic: the pages
 * call the same REST routes as any other client. */
#include "rest_ui.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/config.h"
#include "rest_gzip.h"

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json; charset=utf-8"},
        {".wasm", "application/wasm"},
        {".woff2", "font/woff2"},
        {".woff", "font/woff"},
        {".ttf", "font/ttf"},
        {".map", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".xml", "application/xml"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

void rest_ui_redirect(rest_request *req)
{
    /* relative, so that a reverse proxy may mount Tessera under a prefix; 302 and
     * not Orthanc's 301, so that browsers do not remember it for good */
    rest_reply_empty(req, 302);
    rest_add_header(req, "Location", "ui/");
}

/* Headers of every UI file: revalidated on each load (a new rest shows its own
 * UI at once), never sniffed, never framed, scripts only from this origin. */
static void ui_headers(rest_request *req)
{
    rest_add_header(req, "Cache-Control", "no-cache");
    rest_add_header(req, "X-Content-Type-Options", "nosniff");
    rest_add_header(req, "Content-Security-Policy",
                    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                    "frame-ancestors 'none'");
}

/* The path under the route's first segment, joined; false when a segment starts
 * with a dot or the path is too long. */
static bool sub_path(rest_request *req, char *path, size_t size)
{
    size_t n = 0;
    path[0] = '\0';
    for (int i = 1; i < req->nseg; i++) {
        if (req->seg[i][0] == '.')
            return false;
        int w = snprintf(path + n, size - n, "%s%s", i > 1 ? "/" : "", req->seg[i]);
        if (w < 0 || (size_t)w >= size - n)
            return false;
        n += (size_t)w;
    }
    return true;
}

/* Opens dir/path when it is a regular file; -1 otherwise. */
static int open_file(const char *dir, const char *path, struct stat *st)
{
    char full[1024];
    if ((size_t)snprintf(full, sizeof(full), "%s/%s", dir, path) >= sizeof(full))
        return -1;
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && (fstat(fd, st) != 0 || !S_ISREG(st->st_mode))) {
        close(fd);
        fd = -1;
    }
    return fd;
}

void rest_ui_file_get(rest_request *req)
{
    /* seg[0] is "ui"; the rest names the file ("" is index.html). Dot files and
     * ".." never name one (split_path already resolved "..") */
    char path[512];
    if (!sub_path(req, path, sizeof(path))) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!path[0]) {
        /* the pages name their files relative to /ui/: "/ui" must become "/ui/" */
        size_t raw = req->raw_url ? strlen(req->raw_url) : 0;
        if (raw && req->raw_url[raw - 1] != '/') {
            rest_reply_empty(req, 302);
            rest_add_header(req, "Location", "ui/");
            return;
        }
        snprintf(path, sizeof(path), "index.html");
    }

    const char *dir = ts_cfg_str(TESSERA_UI_DIR);
    if (dir[0]) {
        /* development: the files as they are on disk now */
        struct stat st;
        int fd = open_file(dir, path, &st);
        if (fd < 0) {
            rest_reply_unknown_resource(req);
            return;
        }
        rest_reply_file(req, fd, (size_t)st.st_size, content_type(path));
        ui_headers(req);
        return;
    }
    for (size_t i = 0; i < rest_ui_files_count; i++) {
        const rest_ui_file *f = &rest_ui_files[i];
        if (f->path && strcmp(f->path, path) == 0) {
            rest_reply_text(req, 200, f->bytes, f->size);
            req->content_type = content_type(path);
            ui_headers(req);
            return;
        }
    }
    rest_reply_unknown_resource(req);
}

/* A name with a dot-separated part of 16 or more hex digits (webpack's
 * [contenthash]: "app.bundle.0f6159c501addfe9.js", "0ddf166f7a343eda.wasm"). */
static bool hashed_name(const char *name)
{
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, ".");
        size_t hex = strspn(p, "0123456789abcdef");
        if (n >= 16 && hex == n && p[n] == '.')
            return true;
        p += n + (p[n] == '.');
    }
    return false;
}

/* The viewer file's ETag: fetch-viewer's stamp of the build (OHIF's version
 * and our rewrites: it changes with any of them, and is the same on every
 * replica made from the same inputs), the size and the modification time, and
 * which coding. The stamp makes an OHIF upgrade change every ETag even where
 * tar gave two files the same size and time. */
static void viewer_etag(rest_request *req, const char *dir, const struct stat *st, bool gz)
{
    char stamp[64] = "";
    struct stat sst;
    int sfd = open_file(dir, ".tessera-viewer", &sst);
    if (sfd >= 0) {
        ssize_t n = read(sfd, stamp, sizeof(stamp) - 1);
        stamp[n > 0 ? n : 0] = '\0';
        stamp[strcspn(stamp, "\n\"")] = '\0';
        close(sfd);
    }
    snprintf(req->etag, sizeof(req->etag), "\"%.32s-%llx-%llx.%lx%s\"", stamp,
             (unsigned long long)st->st_size, (unsigned long long)st->st_mtim.tv_sec,
             (unsigned long)st->st_mtim.tv_nsec, gz ? "-gz" : "");
}

/* If-None-Match (RFC 9110 13.1.2): "*", or a list of ETags, weak ones
 * compared weakly (W/ ignored). */
static bool etag_matches(const char *h, const char *etag)
{
    size_t elen = strlen(etag);
    while (h && *h) {
        h += strspn(h, " \t,");
        if (*h == '*')
            return true;
        if (strncmp(h, "W/", 2) == 0)
            h += 2;
        size_t n = strcspn(h, " \t,");
        if (n == elen && elen && memcmp(h, etag, n) == 0)
            return true;
        h += n;
    }
    return false;
}

void rest_viewer_get(rest_request *req)
{
    const char *dir = ts_cfg_str(TESSERA_VIEWER_DIR);
    char path[512];
    if (!dir[0] || !sub_path(req, path, sizeof(path))) {
        rest_reply_unknown_resource(req);
        return;
    }
    if (!path[0] && req->raw_url && req->raw_url[strlen(req->raw_url) - 1] != '/') {
        rest_reply_empty(req, 302); /* its files are named relative to /viewer/ */
        rest_add_header(req, "Location", "viewer/");
        return;
    }
    struct stat st;
    int fd = path[0] ? open_file(dir, path, &st) : -1;
    /* OHIF routes in the browser (/viewer/viewer?StudyInstanceUIDs=...): a path
     * that names no file and has no extension is its index.html */
    const char *last = strrchr(path, '/');
    bool is_file_name = strchr(last ? last : path, '.') != NULL;
    bool index = false;
    if (fd < 0 && !is_file_name) {
        fd = open_file(dir, "index.html", &st);
        index = true;
    }
    if (fd < 0) {
        rest_reply_unknown_resource(req);
        return;
    }
    const char *name = index ? "index.html" : path;
    /* scripts/fetch-viewer keeps a gzip copy beside each large text file (17 MB
     * of app bundle is 4 MB so): sent as it is to a client that takes gzip */
    char gz[520];
    struct stat gst;
    int gfd = -1;
    if ((size_t)snprintf(gz, sizeof(gz), "%s.gz", name) < sizeof(gz))
        gfd = open_file(dir, gz, &gst);
    bool has_gz = gfd >= 0, use_gz = has_gz && rest_accepts_gzip(req);
    if (use_gz) {
        close(fd);
        fd = gfd;
        st = gst;
    } else if (has_gz) {
        close(gfd);
    }
    /* webpack's bundles, chunks, WebAssembly and fonts carry a hash of their
     * bytes in their names: cached for good, never asked again. The entry
     * points (index.html, app-config.js, init-service-worker.js) are
     * revalidated on each visit; the few other files without a hash (icons,
     * small style sheets) kept a day. All have an ETag: a 304 without a body
     * while they are unchanged */
    bool entry = index || strcmp(name, "index.html") == 0 || strncmp(name, "app-config", 10) == 0 ||
                 strncmp(name, "init-", 5) == 0;
    const char *base = strrchr(name, '/');
    rest_add_header(req, "Cache-Control",
                    entry                                 ? "no-cache"
                    : hashed_name(base ? base + 1 : name) ? "public, max-age=31536000, immutable"
                                                          : "max-age=86400");
    if (has_gz)
        rest_add_header(req, "Vary", "Accept-Encoding");
    rest_add_header(req, "X-Content-Type-Options", "nosniff");
    viewer_etag(req, dir, &st, use_gz);
    if (etag_matches(rest_header(req, "If-None-Match"), req->etag)) {
        close(fd);
        rest_reply_empty(req, 304);
        return;
    }
    rest_reply_file(req, fd, (size_t)st.st_size, content_type(name));
    if (use_gz)
        rest_add_header(req, "Content-Encoding", "gzip");
}
