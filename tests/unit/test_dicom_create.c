/* New datasets for /tools/create-dicom (lib/dicom/dicom_create.cc): content from
 * data URIs (PDF, PNG decoded by libpng) and the refusals Orthanc 1.10.1 gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dicom/dicom.h"
#include "dicom/dicom_create.h"
#include "dicom/dicom_modify.h"

static int setup(void **state)
{
    (void)state;
    ts_err err;
    return ts_dicom_global_init(&err);
}

/* d saved and read back */
static ts_dicom *round_trip(ts_dicom *d)
{
    char path[] = "/tmp/ts-create-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ts_err err;
    assert_int_equal(ts_dicom_save_file(d, path, &err), 0);
    ts_dicom *back;
    assert_int_equal(ts_dicom_open_file(path, &back, &err), 0);
    unlink(path);
    return back;
}

static void test_png_content(void **state)
{
    (void)state;
    /* a 2x2 red RGB PNG */
    const char *uri = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQ"
                      "VR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==";
    ts_dicom *d = ts_dicom_new();
    ts_err err;
    ts_oe oe;
    assert_int_equal(ts_dicom_put_string(d, TS_TAG_SOP_INSTANCE_UID, "1.2.3", &err), 0);
    assert_int_equal(ts_dicom_set_content(d, uri, &oe, &err), 0);
    ts_dicom *back = round_trip(d);
    char *rows = ts_dicom_get_string(back, TS_TAG(0x0028, 0x0010), false);
    char *photometric = ts_dicom_get_string(back, TS_TAG(0x0028, 0x0004), false);
    assert_string_equal(rows, "2");
    assert_string_equal(photometric, "RGB");
    free(rows);
    free(photometric);
    ts_dicom_free(back);
    ts_dicom_free(d);
}

static void test_pdf_and_refusals(void **state)
{
    (void)state;
    ts_dicom *d = ts_dicom_new();
    ts_err err;
    ts_oe oe = TS_OE_SUCCESS;
    assert_int_equal(ts_dicom_set_content(d, "data:application/pdf;base64,JVBERi0xLjQK", &oe, &err),
                     0);
    ts_dicom *back = round_trip(d);
    char *cls = ts_dicom_get_string(back, TS_TAG_SOP_CLASS_UID, false);
    char *mime = ts_dicom_get_string(back, TS_TAG(0x0042, 0x0012), false);
    assert_string_equal(cls, "1.2.840.10008.5.1.4.1.1.104.1");
    assert_string_equal(mime, "application/pdf");
    free(cls);
    free(mime);
    ts_dicom_free(back);

    assert_int_equal(ts_dicom_set_content(d, "hello", &oe, &err), TS_EINVAL);
    assert_int_equal(oe, TS_OE_BAD_FILE_FORMAT);
    assert_int_equal(ts_dicom_set_content(d, "data:image/gif;base64,R0lGOD", &oe, &err), TS_EINVAL);
    assert_int_equal(oe, TS_OE_NOT_IMPLEMENTED);
    assert_string_equal(err.msg,
                        "Unsupported MIME type for the content of a new DICOM file: image/gif");
    assert_int_equal(ts_dicom_set_content(d, "data:image/png;base64,AAAA", &oe, &err), TS_EINVAL);
    assert_int_equal(oe, TS_OE_BAD_FILE_FORMAT);
    assert_int_equal(ts_dicom_set_content(d, "data:image/jpeg;base64,AAAA", &oe, &err), TS_EINVAL);
    assert_int_equal(oe, TS_OE_BAD_FILE_FORMAT);
    ts_dicom_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_content),
        cmocka_unit_test(test_pdf_and_refusals),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
