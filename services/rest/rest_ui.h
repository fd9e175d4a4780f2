/* The web UI (ui/ at the repository root): static files under /ui/, compiled
 * into tessera-rest (cmake/embed_ui.cmake) or read from TESSERA_UI_DIR when set.
 * Served through the route table, so HTTP Basic authentication covers them
 * exactly as it covers the API (as Orthanc does for its Explorer). */
#ifndef REST_UI_H
#define REST_UI_H

#include <stddef.h>

#include "rest_http.h"

typedef struct rest_ui_file {
    const char *path; /* relative to ui/, e.g. "app.js" */
    size_t size;
    const char *bytes;
} rest_ui_file;

extern const rest_ui_file rest_ui_files[];
extern const size_t rest_ui_files_count;

/* GET / and GET /ui: 302 to /ui/. */
void rest_ui_redirect(rest_request *req);
/* GET /ui/ and every path under it: a file of the UI; index.html for the folder. */
void rest_ui_file_get(rest_request *req);

/* GET /viewer and below: the OHIF viewer from TESSERA_VIEWER_DIR (made by
 * scripts/fetch-viewer); a path without a file is OHIF's index.html (its routes
 * live in the browser). 404 everywhere when the setting is empty. */
void rest_viewer_get(rest_request *req);

#endif
