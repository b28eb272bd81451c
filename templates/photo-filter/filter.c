/* Photo filter for the `photo-filter` template: a `wasm_execution` task that takes an image and
 * returns the filtered image.
 *
 * stdin:  the task's inputs as the agent gives them (compact JSON),
 *         {"filter": NAME, "image": BASE64}, where the image is a binary PGM (P5, grey) or PPM
 *         (P6, colour) with maxval 255. Other keys are ignored.
 * stdout: {"filter": NAME, "height": H, "image": BASE64, "width": W}, the filtered image as a
 *         binary PGM or PPM in base64.
 * Filters (all in integer arithmetic, so every node gives the same bytes):
 *   grayscale  luma Y = (77 R + 150 G + 29 B + 128) >> 8 per pixel; out: P5.
 *   blur       3x3 box blur of each channel, (sum of 9 + 4) / 9, edges clamped; out: as the input.
 *   edge       Sobel on the luma: min(255, (|Gx| + |Gy|) / 2), edges clamped; out: P5.
 * A bad input ends the run with exit code 1 (the task fails with kind `exit`), and a sentence on
 * stderr says why.
 *
 * Built with templates/photo-filter/build.sh (clang --target=wasm32-wasi, Debian's wasi-libc). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes all `len` bytes to `fd`, looping on short writes; 0 on success. */
static int write_all(int fd, const char *p, size_t len) {
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes "filter: " and `msg` to stderr and returns the exit code of a failed run. */
static int fail(const char *msg) {
    write_all(2, "filter: ", 8);
    write_all(2, msg, strlen(msg));
    write_all(2, "\n", 1);
    return 1;
}

/* Reads all of stdin; NULL when memory or the read fails. */
static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *bigger = realloc(buf, cap);
            if (!bigger) { free(buf); return NULL; }
            buf = bigger;
        }
        ssize_t got = read(0, buf + n, cap - n);
        if (got < 0) { free(buf); return NULL; }
        if (got == 0) break;
        n += (size_t)got;
    }
    *len = n;
    return buf;
}

/* ---- JSON: just enough to read one object's string members and skip everything else. ---- */

typedef struct {
    const char *p, *end;
} Cursor;

static void skip_ws(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (unsigned)(ch - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* Reads a JSON string at the cursor (which is on its opening quote). With `out`, its decoded
 * UTF-8 goes into a new NUL-terminated buffer (length in *out_len). 0 on success. */
static int read_string(Cursor *c, char **out, size_t *out_len) {
    if (c->p >= c->end || *c->p != '"') return -1;
    c->p++;
    const char *start = c->p;
    /* The decoded string is never longer than the encoded one. */
    char *buf = NULL;
    size_t n = 0;
    if (out) {
        const char *q = start;
        while (q < c->end && *q != '"') q += (*q == '\\' && q + 1 < c->end) ? 2 : 1;
        buf = malloc((size_t)(q - start) + 1);
        if (!buf) return -1;
    }
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch < 0x20) goto bad;
        if (ch != '\\') {
            if (buf) buf[n++] = (char)ch;
            continue;
        }
        if (c->p >= c->end) goto bad;
        char e = *c->p++;
        unsigned cp;
        switch (e) {
        case '"': case '\\': case '/': cp = (unsigned char)e; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (c->end - c->p < 4 || hex4(c->p, &cp)) goto bad;
            c->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) { /* a surrogate pair */
                unsigned lo;
                if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || hex4(c->p + 2, &lo)
                    || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                c->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                goto bad;
            }
            break;
        default: goto bad;
        }
        if (!buf) continue;
        /* An escape is at least 2 bytes and its UTF-8 at most 4 from at least 6 (\uXXXX or a
         * pair), so the buffer sized by the encoded length always holds it. */
        if (cp < 0x80) {
            buf[n++] = (char)cp;
        } else if (cp < 0x800) {
            buf[n++] = (char)(0xC0 | (cp >> 6));
            buf[n++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            buf[n++] = (char)(0xE0 | (cp >> 12));
            buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            buf[n++] = (char)(0xF0 | (cp >> 18));
            buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    if (c->p >= c->end) goto bad;
    c->p++; /* the closing quote */
    if (out) {
        buf[n] = '\0';
        *out = buf;
        *out_len = n;
    }
    return 0;
bad:
    free(buf);
    return -1;
}

/* Skips one JSON value of any kind. 0 on success. */
static int skip_value(Cursor *c, int depth) {
    if (depth > 64) return -1;
    skip_ws(c);
    if (c->p >= c->end) return -1;
    char ch = *c->p;
    if (ch == '"') return read_string(c, NULL, NULL);
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        c->p++;
        skip_ws(c);
        if (c->p < c->end && *c->p == close) { c->p++; return 0; }
        for (;;) {
            if (ch == '{') {
                skip_ws(c);
                if (read_string(c, NULL, NULL)) return -1;
                skip_ws(c);
                if (c->p >= c->end || *c->p++ != ':') return -1;
            }
            if (skip_value(c, depth + 1)) return -1;
            skip_ws(c);
            if (c->p >= c->end) return -1;
            if (*c->p == ',') { c->p++; continue; }
            if (*c->p == close) { c->p++; return 0; }
            return -1;
        }
    }
    /* A number or a literal: the run of characters that can make one. */
    const char *start = c->p;
    while (c->p < c->end && strchr("0123456789+-.eEtruefalsn", *c->p)) c->p++;
    return c->p > start ? 0 : -1;
}

/* Reads the top-level object, keeping the string values of "filter" and "image". */
static const char *parse_inputs(const char *json, size_t len, char **filter, char **image,
                                size_t *image_len) {
    Cursor c = {json, json + len};
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != '{') return "the inputs are not a JSON object";
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') return "the inputs have no \"image\"";
    for (;;) {
        char *key;
        size_t key_len;
        skip_ws(&c);
        if (read_string(&c, &key, &key_len)) return "the inputs are not valid JSON";
        skip_ws(&c);
        if (c.p >= c.end || *c.p++ != ':') { free(key); return "the inputs are not valid JSON"; }
        skip_ws(&c);
        char **want = NULL;
        size_t ignored, *want_len = &ignored;
        if (strcmp(key, "filter") == 0) want = filter;
        else if (strcmp(key, "image") == 0) { want = image; want_len = image_len; }
        free(key);
        if (want) {
            if (c.p >= c.end || *c.p != '"') return "\"filter\" and \"image\" must be strings";
            free(*want);
            *want = NULL;
            if (read_string(&c, want, want_len)) return "the inputs are not valid JSON";
        } else if (skip_value(&c, 0)) {
            return "the inputs are not valid JSON";
        }
        skip_ws(&c);
        if (c.p >= c.end) return "the inputs are not valid JSON";
        if (*c.p == ',') { c.p++; continue; }
        if (*c.p++ == '}') break;
        return "the inputs are not valid JSON";
    }
    skip_ws(&c);
    if (c.p != c.end) return "the inputs are not valid JSON";
    return NULL;
}

/* ---- base64 (RFC 4648, standard alphabet, with padding) ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* Decodes standard padded base64 into a new buffer; NULL when it is not that. */
static unsigned char *b64_decode(const char *s, size_t len, size_t *out_len) {
    if (len % 4) return NULL;
    size_t pad = len && s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (!out) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            int last_group = i + 4 == len;
            if (last_group && s[i + k] == '=' && k >= 4 - (int)pad) v[k] = 0;
            else if ((v[k] = b64_value(s[i + k])) < 0) { free(out); return NULL; }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[n++] = (unsigned char)(w >> 16);
        out[n++] = (unsigned char)(w >> 8);
        out[n++] = (unsigned char)w;
    }
    *out_len = n - pad;
    return out;
}

/* Encodes `len` bytes as padded base64 at `out` (4 * ceil(len / 3) bytes); returns its length. */
static size_t b64_encode(const unsigned char *in, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16;
        if (i + 1 < len) w |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) w |= in[i + 2];
        out[n++] = B64[(w >> 18) & 63];
        out[n++] = B64[(w >> 12) & 63];
        out[n++] = i + 1 < len ? B64[(w >> 6) & 63] : '=';
        out[n++] = i + 2 < len ? B64[w & 63] : '=';
    }
    return n;
}

/* ---- PGM / PPM ---- */

typedef struct {
    int width, height, channels; /* channels: 1 for P5, 3 for P6 */
    unsigned char *pixels;       /* row-major, channels interleaved */
} Image;

/* Reads one header number, skipping whitespace and '#' comments before it. */
static int pnm_number(const unsigned char *d, size_t len, size_t *i, long *out) {
    for (;;) {
        while (*i < len && (d[*i] == ' ' || d[*i] == '\t' || d[*i] == '\n' || d[*i] == '\r'))
            (*i)++;
        if (*i < len && d[*i] == '#') {
            while (*i < len && d[*i] != '\n') (*i)++;
            continue;
        }
        break;
    }
    if (*i >= len || d[*i] < '0' || d[*i] > '9') return -1;
    long v = 0;
    while (*i < len && d[*i] >= '0' && d[*i] <= '9') {
        v = v * 10 + (d[(*i)++] - '0');
        if (v > 1000000) return -1;
    }
    *out = v;
    return 0;
}

static const char *pnm_read(const unsigned char *d, size_t len, Image *img) {
    if (len < 2 || d[0] != 'P' || (d[1] != '5' && d[1] != '6'))
        return "the image is not a binary PGM (P5) or PPM (P6)";
    img->channels = d[1] == '5' ? 1 : 3;
    size_t i = 2;
    long w, h, maxval;
    if (pnm_number(d, len, &i, &w) || pnm_number(d, len, &i, &h) || pnm_number(d, len, &i, &maxval))
        return "the image's header is malformed (width, height, maxval)";
    if (w < 1 || h < 1 || (uint64_t)w * (uint64_t)h > 16u * 1024 * 1024)
        return "the image must be 1 to 16 Mi pixels";
    if (maxval != 255) return "only 8-bit images (maxval 255) are supported";
    if (i >= len || !(d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r'))
        return "the image's header is malformed (no whitespace after maxval)";
    i++;
    size_t need = (size_t)w * (size_t)h * (size_t)img->channels;
    if (len - i < need) return "the image's pixel data is shorter than its header says";
    img->width = (int)w;
    img->height = (int)h;
    img->pixels = (unsigned char *)d + i;
    return NULL;
}

/* ---- the filters ---- */

static unsigned char luma(const Image *img, int x, int y) {
    const unsigned char *p = img->pixels + ((size_t)y * img->width + x) * img->channels;
    if (img->channels == 1) return p[0];
    return (unsigned char)((77 * p[0] + 150 * p[1] + 29 * p[2] + 128) >> 8);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The filtered raster of `img` into `out` (w * h * *out_channels bytes). */
static const char *apply(const char *filter, const Image *img, unsigned char *out,
                         int *out_channels) {
    int w = img->width, h = img->height;
    if (strcmp(filter, "grayscale") == 0) {
        *out_channels = 1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) out[(size_t)y * w + x] = luma(img, x, y);
        return NULL;
    }
    if (strcmp(filter, "blur") == 0) {
        int ch = img->channels;
        *out_channels = ch;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < ch; k++) {
                    int sum = 0;
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            int sx = clampi(x + dx, 0, w - 1), sy = clampi(y + dy, 0, h - 1);
                            sum += img->pixels[((size_t)sy * w + sx) * ch + k];
                        }
                    out[((size_t)y * w + x) * ch + k] = (unsigned char)((sum + 4) / 9);
                }
        return NULL;
    }
    if (strcmp(filter, "edge") == 0) {
        *out_channels = 1;
        unsigned char *g = malloc((size_t)w * h);
        if (!g) return "out of memory";
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) g[(size_t)y * w + x] = luma(img, x, y);
#define G(dx, dy) ((int)g[(size_t)clampi(y + (dy), 0, h - 1) * w + clampi(x + (dx), 0, w - 1)])
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int gx = G(1, -1) + 2 * G(1, 0) + G(1, 1) - G(-1, -1) - 2 * G(-1, 0) - G(-1, 1);
                int gy = G(-1, 1) + 2 * G(0, 1) + G(1, 1) - G(-1, -1) - 2 * G(0, -1) - G(1, -1);
                int m = (abs(gx) + abs(gy)) / 2;
                out[(size_t)y * w + x] = (unsigned char)(m > 255 ? 255 : m);
            }
#undef G
        free(g);
        return NULL;
    }
    return "unknown filter; the filters are grayscale, blur and edge";
}

/* Appends v in decimal at out[n]; returns the new length. */
static size_t put_int(char *out, size_t n, long v) {
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k) out[n++] = digits[--k];
    return n;
}

static size_t put_str(char *out, size_t n, const char *s) {
    size_t len = strlen(s);
    memcpy(out + n, s, len);
    return n + len;
}

int main(void) {
    size_t len;
    char *json = read_stdin(&len);
    if (!json) return fail("cannot read stdin (out of memory or a read error)");
    char *filter = NULL, *image_b64 = NULL;
    size_t b64_len = 0;
    const char *err = parse_inputs(json, len, &filter, &image_b64, &b64_len);
    free(json);
    if (err) return fail(err);
    if (!image_b64) return fail("the inputs have no \"image\" (a PGM or PPM in base64)");
    if (!filter) return fail("the inputs have no \"filter\" (grayscale, blur or edge)");
    size_t raw_len;
    unsigned char *raw = b64_decode(image_b64, b64_len, &raw_len);
    free(image_b64);
    if (!raw) return fail("\"image\" is not standard padded base64");
    Image img;
    if ((err = pnm_read(raw, raw_len, &img))) return fail(err);

    size_t pixels = (size_t)img.width * img.height;
    unsigned char *out = malloc(pixels * 3 + 32);
    if (!out) return fail("out of memory");
    int out_channels;
    /* The PNM header goes in front of the raster. */
    char header[40];
    size_t hlen = put_str(header, 0, "P?\n");
    hlen = put_int(header, hlen, img.width);
    hlen = put_str(header, hlen, " ");
    hlen = put_int(header, hlen, img.height);
    hlen = put_str(header, hlen, "\n255\n");
    if ((err = apply(filter, &img, out + hlen, &out_channels))) return fail(err);
    header[1] = out_channels == 1 ? '5' : '6';
    memcpy(out, header, hlen);
    size_t out_len = hlen + pixels * out_channels;

    size_t cap = 96 + strlen(filter) + (out_len + 2) / 3 * 4;
    char *text = malloc(cap);
    if (!text) return fail("out of memory");
    size_t n = put_str(text, 0, "{\"filter\":\"");
    n = put_str(text, n, filter);
    n = put_str(text, n, "\",\"height\":");
    n = put_int(text, n, img.height);
    n = put_str(text, n, ",\"image\":\"");
    n += b64_encode(out, out_len, text + n);
    n = put_str(text, n, "\",\"width\":");
    n = put_int(text, n, img.width);
    n = put_str(text, n, "}");
    return write_all(1, text, n) == 0 ? 0 : 1;
}
