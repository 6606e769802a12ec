/* imgbatch.imaging._jpegdct: DCT-domain requantization of a JPEG (optional accelerator).
 *
 * Why: re-encoding a JPEG at a lower quality without resizing does not need pixels.
 * Entropy-decode the quantized DCT coefficients (jpeg_read_coefficients), move each one
 * to the target quantizer, entropy-encode them again (jpeg_write_coefficients): no
 * IDCT/DCT, no colour conversion, no chroma resampling, so neither their CPU nor their
 * generation loss. `imaging.turbo` decides when this applies (8-bit YCbCr 4:2:0 or
 * greyscale, baseline or progressive, upright) and takes the pixel route otherwise.
 *
 *   requantize(data, luma, chroma) -> bytes
 *
 * `luma` (first component) and `chroma` (the others) are the target tables, 64 ints in
 * natural order. Per entry the new quantizer is the coarser of the input's and the
 * target's: a finer one than the input's adds bytes and no detail. Each coefficient
 * becomes round(c * q_old / q_new), exact ties rounded toward zero (a tie is equally
 * far from both, and zero is cheaper to code). The output is a sequential JPEG with a
 * JFIF marker and no other: the caller splices the ICC profile back in. Any libjpeg
 * warning (corrupt or truncated data) is an error, so the caller's general path decides
 * what such an image is worth. The GIL is released while libjpeg works.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

static PyObject *JpegError;

struct error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
    struct error_mgr *err = (struct error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) /* a warning: corrupt or truncated data */
        on_error(cinfo);
}

/* A growable output buffer this module owns. (libjpeg's jpeg_mem_dest hands its current
 * buffer back only when compression finishes, so after an error midway the caller holds
 * a pointer the library may already have freed.) */
struct buffer_dest {
    struct jpeg_destination_mgr pub;
    unsigned char *buffer;
    size_t size;
};

struct job {
    const unsigned char *data;
    unsigned long size;
    UINT16 targets[2][DCTSIZE2];
    unsigned char *out;
    unsigned long outsize;
    char message[JMSG_LENGTH_MAX];
    struct buffer_dest dest; /* here, not on run()'s stack: it changes after setjmp */
};

static void dest_init(j_compress_ptr cinfo) {
    struct buffer_dest *dest = (struct buffer_dest *)cinfo->dest;
    dest->pub.next_output_byte = dest->buffer;
    dest->pub.free_in_buffer = dest->size;
}

static boolean dest_grow(j_compress_ptr cinfo) {
    /* Called when the buffer is full (free_in_buffer == 0): double it. */
    struct buffer_dest *dest = (struct buffer_dest *)cinfo->dest;
    size_t used = dest->size;
    unsigned char *bigger = realloc(dest->buffer, used * 2);
    if (bigger == NULL)
        ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 10);
    dest->buffer = bigger;
    dest->size = used * 2;
    dest->pub.next_output_byte = bigger + used;
    dest->pub.free_in_buffer = dest->size - used;
    return TRUE;
}

static void dest_term(j_compress_ptr Py_UNUSED(cinfo)) {}

/* c' = sign(c) * floor((2|c|q_old + q_new - 1) / (2 q_new)), through one double product:
 * with q_old <= 255 and |c| < 2^15 the dividend n is below 2^24, so n * (1 / 2q_new) is
 * within 2^-27 of the exact quotient, while a non-integer quotient lies at least
 * 1 / (2 q_new) >= 1/510 below the next integer (q_new <= 255 here): the 2^-20 nudge
 * lifts exact integers that came out low and nothing else. Vectorizes; an AVX2 clone where GCC can make one. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
static int32_t requantize_block(JCOEFPTR block, const int32_t *old, const double *bias,
                                const double *inv) {
    int k;
    int32_t peak = 0; /* the largest magnitude written: see in_range() */
    for (k = 0; k < DCTSIZE2; k++) {
        int32_t v = (int32_t)block[k] * old[k];
        int32_t s = v >> 31;
        int32_t a = (v ^ s) - s;
        int32_t r = (int32_t)((2.0 * a + bias[k]) * inv[k] + 0x1p-20);
        peak = r > peak ? r : peak;
        block[k] = (JCOEF)((r ^ s) - s);
    }
    return peak;
}

/* The same for input tables wider than 8 bits (quantizers above 255): exact division. */
static int32_t requantize_block_wide(JCOEFPTR block, const int32_t *old, const UINT16 *new_q) {
    int k;
    int32_t peak = 0;
    for (k = 0; k < DCTSIZE2; k++) {
        int64_t v = (int64_t)block[k] * old[k], q = new_q[k];
        int64_t r = ((v < 0 ? -v : v) * 2 + q - 1) / (2 * q);
        peak = r > peak ? (int32_t)r : peak;
        block[k] = (JCOEF)(v < 0 ? -r : r);
    }
    return peak;
}

/* Whether a requantized block can be entropy-coded as 8-bit JPEG: |AC| <= 1023 and
 * |DC| <= 1024 (so DC differences stay within 11 bits). libjpeg decodes larger values
 * from a hostile stream, and libjpeg-turbo's SIMD Huffman encoder writes them without
 * a check, as a corrupt stream: such an image goes to the pixel path instead. */
static int in_range(JCOEFPTR block, int32_t peak) {
    int k;
    if (peak <= 1023)
        return 1;
    if (block[0] > 1024 || block[0] < -1024)
        return 0;
    for (k = 1; k < DCTSIZE2; k++)
        if (block[k] > 1023 || block[k] < -1023)
            return 0;
    return 1;
}

static int requantize_component(j_decompress_ptr src, jvirt_barray_ptr array,
                                 const jpeg_component_info *comp, const UINT16 *old_q,
                                 const UINT16 *new_q) {
    JDIMENSION row, x;
    int k, dy, wide = 0;
    int32_t old[DCTSIZE2];
    double bias[DCTSIZE2], inv[DCTSIZE2];
    JBLOCKARRAY rows;

    for (k = 0; k < DCTSIZE2; k++) {
        old[k] = old_q[k];
        bias[k] = new_q[k] - 1.0;
        inv[k] = 1.0 / (2.0 * new_q[k]);
        wide |= old_q[k] > 255;
    }
    for (row = 0; row < comp->height_in_blocks; row += comp->v_samp_factor) {
        rows = (*src->mem->access_virt_barray)((j_common_ptr)src, array, row,
                                               (JDIMENSION)comp->v_samp_factor, TRUE);
        for (dy = 0; dy < comp->v_samp_factor; dy++) {
            for (x = 0; x < comp->width_in_blocks; x++) {
                JCOEFPTR block = rows[dy][x];
                int32_t peak = wide ? requantize_block_wide(block, old, new_q)
                                    : requantize_block(block, old, bias, inv);
                if (!in_range(block, peak))
                    return 0;
            }
        }
    }
    return 1;
}

static void fail(struct error_mgr *err, const char *message) {
    snprintf(err->message, sizeof err->message, "%s", message);
    longjmp(err->jump, 1);
}

/* Runs without the GIL. Returns 1 with job->out (malloc'd) set, or 0 with job->message. */
static int run(struct job *job) {
    struct jpeg_decompress_struct src;
    struct jpeg_compress_struct dst;
    struct error_mgr err;
    struct buffer_dest *dest = &job->dest;
    volatile int have_src = 0, have_dst = 0;
    UINT16 new_q[MAX_COMPONENTS][DCTSIZE2];
    jvirt_barray_ptr *coefs;
    int ci, k, slot;

    memset(&src, 0, sizeof src);
    memset(&dst, 0, sizeof dst);
    src.err = jpeg_std_error(&err.pub);
    dst.err = &err.pub;
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';
    job->out = NULL;
    job->outsize = 0;
    memset(dest, 0, sizeof *dest);
    if (setjmp(err.jump)) {
        memcpy(job->message, err.message, sizeof job->message);
        if (have_dst)
            jpeg_destroy_compress(&dst);
        if (have_src)
            jpeg_destroy_decompress(&src);
        free(dest->buffer);
        dest->buffer = NULL;
        return 0;
    }
    jpeg_create_decompress(&src);
    have_src = 1;
    jpeg_mem_src(&src, job->data, job->size);
    jpeg_read_header(&src, TRUE);
    if (src.data_precision != 8 ||
        !((src.jpeg_color_space == JCS_YCbCr && src.num_components == 3) ||
          (src.jpeg_color_space == JCS_GRAYSCALE && src.num_components == 1)))
        fail(&err, "not an 8-bit YCbCr or greyscale JPEG");
    coefs = jpeg_read_coefficients(&src);
    jpeg_create_compress(&dst);
    have_dst = 1;
    jpeg_copy_critical_parameters(&src, &dst);
    dst.optimize_coding = FALSE; /* as the pixel path: Huffman optimisation costs ~40 % */
    for (ci = 0; ci < src.num_components; ci++) {
        const JQUANT_TBL *old = src.comp_info[ci].quant_table;
        const UINT16 *target = job->targets[ci == 0 ? 0 : 1];
        if (old == NULL)
            fail(&err, "a component has no quantization table");
        for (k = 0; k < DCTSIZE2; k++)
            new_q[ci][k] = old->quantval[k] > target[k] ? old->quantval[k] : target[k];
    }
    for (ci = 0; ci < src.num_components; ci++) {
        /* One table per component, but Cr shares Cb's when they came out the same. */
        slot = (ci == 2 && memcmp(new_q[1], new_q[2], sizeof new_q[1]) == 0) ? 1 : ci;
        if (dst.quant_tbl_ptrs[slot] == NULL)
            dst.quant_tbl_ptrs[slot] = jpeg_alloc_quant_table((j_common_ptr)&dst);
        memcpy(dst.quant_tbl_ptrs[slot]->quantval, new_q[ci], sizeof new_q[ci]);
        dst.quant_tbl_ptrs[slot]->sent_table = FALSE;
        dst.comp_info[ci].quant_tbl_no = slot;
        if (!requantize_component(&src, coefs[ci], &src.comp_info[ci],
                                  src.comp_info[ci].quant_table->quantval, new_q[ci]))
            fail(&err, "coefficient out of the 8-bit JPEG range");
    }
    dest->size = job->size / 2 + 4096; /* the output is usually under half the input */
    dest->buffer = malloc(dest->size);
    if (dest->buffer == NULL)
        fail(&err, "out of memory");
    dest->pub.init_destination = dest_init;
    dest->pub.empty_output_buffer = dest_grow;
    dest->pub.term_destination = dest_term;
    dst.dest = &dest->pub;
    jpeg_write_coefficients(&dst, coefs);
    jpeg_finish_compress(&dst);
    jpeg_destroy_compress(&dst);
    have_dst = 0;
    jpeg_finish_decompress(&src);
    jpeg_destroy_decompress(&src);
    have_src = 0;
    job->out = dest->buffer;
    job->outsize = (unsigned long)(dest->size - dest->pub.free_in_buffer);
    return 1;
}

static int read_table(PyObject *obj, UINT16 *table) {
    PyObject *seq = PySequence_Fast(obj, "a table is a sequence of 64 ints");
    Py_ssize_t i;
    long v;

    if (seq == NULL)
        return 0;
    if (PySequence_Fast_GET_SIZE(seq) != DCTSIZE2) {
        PyErr_SetString(PyExc_ValueError, "a table has 64 entries");
        Py_DECREF(seq);
        return 0;
    }
    for (i = 0; i < DCTSIZE2; i++) {
        v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return 0;
        }
        if (v < 1 || v > 255) {
            PyErr_SetString(PyExc_ValueError, "a target quantizer is 1..255");
            Py_DECREF(seq);
            return 0;
        }
        table[i] = (UINT16)v;
    }
    Py_DECREF(seq);
    return 1;
}

static PyObject *requantize(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"data", "luma", "chroma", NULL};
    Py_buffer data;
    PyObject *luma, *chroma, *result;
    struct job *job;
    int ok;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*OO", keywords, &data, &luma, &chroma))
        return NULL;
    job = PyMem_RawCalloc(1, sizeof *job);
    if (job == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    if (!read_table(luma, job->targets[0]) || !read_table(chroma, job->targets[1])) {
        PyMem_RawFree(job);
        PyBuffer_Release(&data);
        return NULL;
    }
    job->data = data.buf;
    job->size = (unsigned long)data.len;
    Py_BEGIN_ALLOW_THREADS
    ok = run(job);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (!ok) {
        PyErr_SetString(JpegError, job->message[0] ? job->message : "libjpeg failed");
        PyMem_RawFree(job);
        return NULL;
    }
    result = PyBytes_FromStringAndSize((const char *)job->out, (Py_ssize_t)job->outsize);
    free(job->out);
    PyMem_RawFree(job);
    return result;
}

static int read_ints(PyObject *obj, long *out, long low, long high) {
    PyObject *seq = PySequence_Fast(obj, "a sequence of 64 ints");
    Py_ssize_t i;

    if (seq == NULL)
        return 0;
    if (PySequence_Fast_GET_SIZE(seq) != DCTSIZE2) {
        PyErr_SetString(PyExc_ValueError, "64 entries");
        Py_DECREF(seq);
        return 0;
    }
    for (i = 0; i < DCTSIZE2; i++) {
        out[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return 0;
        }
        if (out[i] < low || out[i] > high) {
            PyErr_Format(PyExc_ValueError, "%ld is not in %ld..%ld", out[i], low, high);
            Py_DECREF(seq);
            return 0;
        }
    }
    Py_DECREF(seq);
    return 1;
}

/* The arithmetic alone, on one block: lets the tests check it against exact integers. */
static PyObject *requantize_values(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *coefs_obj, *old_obj, *new_obj, *result;
    long coefs[DCTSIZE2], old_l[DCTSIZE2], new_l[DCTSIZE2];
    JCOEF block[DCTSIZE2];
    int32_t old[DCTSIZE2];
    UINT16 new_q[DCTSIZE2];
    double bias[DCTSIZE2], inv[DCTSIZE2];
    int k, wide = 0;

    if (!PyArg_ParseTuple(args, "OOO", &coefs_obj, &old_obj, &new_obj) ||
        !read_ints(coefs_obj, coefs, -32767, 32767) || !read_ints(old_obj, old_l, 1, 32767) ||
        !read_ints(new_obj, new_l, 1, 32767))
        return NULL;
    for (k = 0; k < DCTSIZE2; k++) {
        block[k] = (JCOEF)coefs[k];
        old[k] = (int32_t)old_l[k];
        new_q[k] = (UINT16)new_l[k];
        bias[k] = new_q[k] - 1.0;
        inv[k] = 1.0 / (2.0 * new_q[k]);
        wide |= old_l[k] > 255 || new_l[k] > 255;
    }
    if (wide)
        requantize_block_wide(block, old, new_q);
    else
        requantize_block(block, old, bias, inv);
    result = PyList_New(DCTSIZE2);
    for (k = 0; result != NULL && k < DCTSIZE2; k++)
        PyList_SET_ITEM(result, k, PyLong_FromLong(block[k]));
    return result;
}

static PyMethodDef methods[] = {
    {"requantize", (PyCFunction)(void (*)(void))requantize, METH_VARARGS | METH_KEYWORDS,
     "requantize(data, luma, chroma) -> bytes\n\n"
     "The JPEG moved to the coarser of its own and the target quantization tables, in the\n"
     "DCT domain; JpegError (a ValueError) for anything but clean 8-bit YCbCr/grey data."},
    {"requantize_values", requantize_values, METH_VARARGS,
     "requantize_values(coefficients, old, new) -> list: one block's arithmetic (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "imgbatch.imaging._jpegdct",
    "DCT-domain JPEG requantization through libjpeg(-turbo); see imgbatch.imaging.turbo.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jpegdct(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    JpegError = PyErr_NewException("imgbatch.imaging._jpegdct.JpegError", PyExc_ValueError, NULL);
    if (JpegError == NULL || PyModule_AddObjectRef(m, "JpegError", JpegError) < 0 ||
        PyModule_AddIntConstant(m, "JPEG_LIB_VERSION", JPEG_LIB_VERSION) < 0) {
        Py_XDECREF(JpegError);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
