/* Monte Carlo π kernel for the sharded `computation` task of the `pi` template.
 *
 * stdin:  one range shard as the coordinator cuts it, {"end":E,"shard":K,"start":S}.
 * stdout: {"hits":H,"samples":N}, N = E - S.
 *
 * Sample i (for i in [S, E)) is h = splitmix64(i): x = h >> 32, y = h & 0xffffffff, and the point
 * is inside the quarter circle when x² + y² < 2^64, tested exactly in 64 bits as x² <= ~(y²).
 * Each sample depends only on its index, so the total over [0, N) is the same however the range
 * is split and wherever the shards run; the reducer `sum` adds the shards' hits and samples, and
 * π ≈ 4·hits/samples. This is the same sequence as the demo's kernel (cli/wasm/pi.wat), so both
 * count the same hits.
 *
 * Built with templates/pi/build.sh (clang --target=wasm32-wasi with Debian's wasi-libc). */
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

/* Writes `msg` to stderr (the agent shows the end of it when the run fails). */
static void complain(const char *msg) { write_all(2, msg, strlen(msg)); }

/* Reads all of stdin into a NUL-terminated buffer; NULL when memory or the read fails. */
static char *read_stdin(size_t *len) {
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            char *bigger = realloc(buf, cap);
            if (!bigger) { free(buf); return NULL; }
            buf = bigger;
        }
        ssize_t got = read(0, buf + n, cap - n - 1);
        if (got < 0) { free(buf); return NULL; }
        if (got == 0) break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The unsigned integer value of key `key` in the flat JSON object `json`; 0 and *ok = 0 when it
 * is missing or not an unsigned integer. */
static uint64_t json_u64(const char *json, const char *key, int *ok) {
    size_t klen = strlen(key);
    const char *p = json;
    *ok = 0;
    /* The key as a JSON string: a quote, the key, a quote. */
    for (;;) {
        p = strchr(p, '"');
        if (!p) return 0;
        p++;
        if (strncmp(p, key, klen) == 0 && p[klen] == '"') break;
    }
    p += klen + 1;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p++ != ':') return 0;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p < '0' || *p > '9') return 0;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p++ - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *ok = 1;
    return v;
}

/* Appends `s` at out[n]; returns the new length. */
static size_t put_str(char *out, size_t n, const char *s) {
    size_t len = strlen(s);
    memcpy(out + n, s, len);
    return n + len;
}

/* Appends v in decimal at out[n]; returns the new length. */
static size_t put_u64(char *out, size_t n, uint64_t v) {
    char digits[20];
    int k = 0;
    do {
        digits[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k) out[n++] = digits[--k];
    return n;
}

int main(void) {
    size_t len;
    char *in = read_stdin(&len);
    if (!in) {
        complain("pi: cannot read stdin (out of memory or a read error)\n");
        return 1;
    }
    int ok_start, ok_end;
    uint64_t start = json_u64(in, "start", &ok_start);
    uint64_t end = json_u64(in, "end", &ok_end);
    if (!ok_start || !ok_end || end < start) {
        complain("pi: stdin must be {\"start\":S,\"end\":E} with unsigned integers S <= E\n");
        return 1;
    }
    uint64_t hits = 0;
    for (uint64_t i = start; i < end; i++) {
        uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        uint64_t x = z >> 32, y = z & 0xffffffffull;
        hits += x * x <= ~(y * y);
    }
    char out[64];
    size_t n = 0;
    n = put_str(out, n, "{\"hits\":");
    n = put_u64(out, n, hits);
    n = put_str(out, n, ",\"samples\":");
    n = put_u64(out, n, end - start);
    n = put_str(out, n, "}");
    return write_all(1, out, n) == 0 ? 0 : 1;
}
