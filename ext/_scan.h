/* The parser's word-at-a-time reads.
 *
 * The structural scan: where the quotes, delimiters and line ends of 64 bytes are, as
 * three bit masks (bit i for byte i), and the block tokenizer that reads a record from
 * them. The masks take 16-byte compares (SSE2, which every x86-64 processor has), 32-byte
 * ones where the processor has AVX2 (asked at run time), or a portable loop elsewhere;
 * all give the same masks.
 *
 * Eight digits, a time of day, and the search for one of a few bytes, each a word or 16
 * bytes at a time.
 */
#ifndef CDRTRACE_SCAN_H
#define CDRTRACE_SCAN_H

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>

static inline uint64_t cdr_match16(__m128i v, __m128i c, unsigned shift) {
    return (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, c)) << shift;
}
#endif

/* Masks of the 64 bytes at p (all readable): *quote, *delim, and *eol ('\n' or '\r'). */
static inline void cdr_masks(const char *p, char delim, char quote,
                             uint64_t *quote_bits, uint64_t *delim_bits, uint64_t *eol_bits) {
#if defined(__SSE2__)
    const __m128i q = _mm_set1_epi8(quote), d = _mm_set1_epi8(delim);
    const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
    uint64_t mq = 0, md = 0, me = 0;
    unsigned i;
    for (i = 0; i < 4; i++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * i));
        mq |= cdr_match16(v, q, 16 * i);
        md |= cdr_match16(v, d, 16 * i);
        me |= (uint64_t)(unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr))) << (16 * i);
    }
    *quote_bits = mq;
    *delim_bits = md;
    *eol_bits = me;
#else
    uint64_t mq = 0, md = 0, me = 0;
    unsigned i;
    for (i = 0; i < 64; i++) {
        char c = p[i];
        mq |= (uint64_t)(c == quote) << i;
        md |= (uint64_t)(c == delim) << i;
        me |= (uint64_t)(c == '\n' || c == '\r') << i;
    }
    *quote_bits = mq;
    *delim_bits = md;
    *eol_bits = me;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CDR_HAVE_AVX2 1

__attribute__((target("avx2,bmi,popcnt")))
static inline uint64_t cdr_match32x2(__m256i lo, __m256i hi, __m256i c) {
    return (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, c))
        | (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, c)) << 32;
}

/* cdr_masks, 32 bytes a compare. */
__attribute__((target("avx2,bmi,popcnt")))
static inline void cdr_masks_avx2(const char *p, char delim, char quote, uint64_t *quote_bits,
                                  uint64_t *delim_bits, uint64_t *eol_bits) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)p);
    const __m256i hi = _mm256_loadu_si256((const __m256i *)(p + 32));
    const __m256i lf = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r');
    *quote_bits = cdr_match32x2(lo, hi, _mm256_set1_epi8(quote));
    *delim_bits = cdr_match32x2(lo, hi, _mm256_set1_epi8(delim));
    *eol_bits = (uint64_t)(uint32_t)_mm256_movemask_epi8(
                    _mm256_or_si256(_mm256_cmpeq_epi8(lo, lf), _mm256_cmpeq_epi8(lo, cr)))
        | (uint64_t)(uint32_t)_mm256_movemask_epi8(
                    _mm256_or_si256(_mm256_cmpeq_epi8(hi, lf), _mm256_cmpeq_epi8(hi, cr))) << 32;
}
#else
#define CDR_HAVE_AVX2 0
#endif

/* Masks of the n < 64 bytes at p: bytes past them match nothing. */
static inline void cdr_masks_tail(const char *p, size_t n, char delim, char quote,
                                  uint64_t *quote_bits, uint64_t *delim_bits,
                                  uint64_t *eol_bits) {
    char block[64];
    uint64_t valid = ((uint64_t)1 << n) - 1;
    memset(block, 0, sizeof block);     /* a NUL is none of the structural bytes */
    memcpy(block, p, n);
    cdr_masks(block, delim, quote, quote_bits, delim_bits, eol_bits);
    *quote_bits &= valid;
    *delim_bits &= valid;
    *eol_bits &= valid;
}

/* Bit i of the result is the parity of bits 0..i of x: with x the quotes, the bytes
 * from an opening quote up to (not including) its closing quote. */
static inline uint64_t cdr_prefix_xor(uint64_t x) {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

static inline int cdr_lowest(uint64_t x) {      /* x != 0 */
    return __builtin_ctzll(x);
}

/* The value of the 8 ASCII digits at p, or -1 when one of the 8 bytes is not a digit:
 * the bytes read as one word, checked and combined in three multiplications. */
static inline int64_t cdr_digits8(const char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if ((x & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL
            || ((x + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL)
        return -1;      /* no byte is over 0x3f after the first test: the sum carries nowhere */
    x -= 0x3030303030303030ULL;
    x = (x * 10 + (x >> 8)) & 0x00FF00FF00FF00FFULL;
    x = (x * 100 + (x >> 16)) & 0x0000FFFF0000FFFFULL;
    x = (x * 10000 + (x >> 32)) & 0xFFFFFFFFULL;
    return (int64_t)x;
#else
    int64_t v = 0;
    int i;
    for (i = 0; i < 8; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    (void)x;
    return v;
#endif
}

/* The first byte of [p, end) that is a, b or c, or end: 16 bytes a step while 16 remain. */
static inline const char *cdr_find3(const char *p, const char *end, char a, char b, char c) {
#if defined(__SSE2__)
    const __m128i va = _mm_set1_epi8(a), vb = _mm_set1_epi8(b), vc = _mm_set1_epi8(c);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, va), _mm_cmpeq_epi8(v, vb)), _mm_cmpeq_epi8(v, vc)));
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    while (p < end && *p != a && *p != b && *p != c)
        p++;
    return p;
}

/* The last byte c of [p, end), or NULL: 16 bytes a step from the end while 16 remain. */
static inline const char *cdr_rfind(const char *p, const char *end, char c) {
#if defined(__SSE2__)
    const __m128i vc = _mm_set1_epi8(c);
    while (end - p >= 16) {
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(end - 16)), vc));
        if (m)
            return end - 16 + (31 - __builtin_clz(m));
        end -= 16;
    }
#endif
    while (end > p) {
        end--;
        if (*end == c)
            return end;
    }
    return NULL;
}

/* "HH:MM:SS" at p -> seconds into the day, or -1 when it is not that shape or out of
 * range (hour over 23, minute or second over 59). */
static inline int cdr_clock8(const char *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t y;
    unsigned h, m, s;
    memcpy(&y, p, 8);
    y ^= 0x30303A30303A3030ULL;     /* digits -> 0..9, the two colons -> 0 */
    if ((y & 0xF0F0F0F0F0F0F0F0ULL) != 0
            || ((y + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0
            || (y & 0x0000FF0000FF0000ULL) != 0)
        return -1;
    y = y * 10 + (y >> 8);          /* bytes 0, 3 and 6: the two-digit values */
    h = (unsigned)(y & 0xFF);
    m = (unsigned)((y >> 24) & 0xFF);
    s = (unsigned)((y >> 48) & 0xFF);
#else
    int i;
    unsigned h, m, s;
    for (i = 0; i < 8; i++) {
        if (i == 2 || i == 5 ? p[i] != ':' : (p[i] < '0' || p[i] > '9'))
            return -1;
    }
    h = (unsigned)((p[0] - '0') * 10 + (p[1] - '0'));
    m = (unsigned)((p[3] - '0') * 10 + (p[4] - '0'));
    s = (unsigned)((p[6] - '0') * 10 + (p[7] - '0'));
#endif
    if (h > 23 || m > 59 || s > 59)
        return -1;
    return (int)(h * 3600 + m * 60 + s);
}

/* ------------------------------------------------------------------ the block tokenizer */

typedef struct {            /* a field: the parser's Span */
    const char *p;
    Py_ssize_t n;
} cdr_span;

#define CDR_OK 0            /* the parser's ST_OK */
#define CDR_FALLBACK (-2)

typedef void (*cdr_masks_t)(const char *p, char delim, char quote, uint64_t *quote_bits,
                            uint64_t *delim_bits, uint64_t *eol_bits);
typedef int (*cdr_tokenize_t)(const char *r, const char *end, char delim, char quote,
                              int keep_fields, Py_ssize_t max_record, cdr_span *f, int *nf,
                              const char **rec_end, const char **next_rec);

/* Field [s, e) into *f: a checked quoted field's quotes are s and e - 1. */
static inline void cdr_put_field(const char *s, const char *e, char quote, cdr_span *f) {
    if (e > s && s[0] == quote) {
        f->p = s + 1;
        f->n = e - s - 2;
    } else {
        f->p = s;
        f->n = e - s;
    }
}

/* The tokenizer's common case (quoted fields, quotes doubled inside them), 64 bytes at a
 * time: CDR_OK with the record's fields, or CDR_FALLBACK for anything else (a quote out
 * of place, a lone CR, a record the buffer does not finish or over max_record), which
 * the byte-by-byte tokenizer then decides.
 *
 * A quote mask's prefix parity marks the bytes inside quotes; delimiters and line ends
 * outside them end fields. The record is well formed when every closing quote is
 * followed by a quote (a doubled one) or a field end, and every opening quote follows a
 * field start or a closing quote (the doubled one's first half). Compiled once per
 * masks function, which it inlines. */
static inline __attribute__((always_inline)) int cdr_tokenize_with(
        cdr_masks_t masks, const char *r, const char *end, char delim, char quote,
        int keep_fields, Py_ssize_t max_record, cdr_span *f, int *nf, const char **rec_end,
        const char **next_rec) {
    const char *b = r, *s = r, *e;      /* s: the first byte of the field being read */
    const uint64_t top = (uint64_t)1 << 63;
    uint64_t q, d, eol, inside, closing, ends, limit, bits;
    uint64_t carry = 0;                 /* all ones when the block starts inside quotes */
    uint64_t before = 1;                /* bit 0: the byte before the block ends a field */
    int closed_last = 0;                /* the block before ended on a closing quote */
    int k = 0;                          /* fields found before this block's */
    cdr_span *fp = f, *kept = f + (keep_fields > 0 ? keep_fields : 0);
    for (;;) {
        Py_ssize_t n = end - b;
        if (n <= 0 || b - r > max_record)
            return CDR_FALLBACK;
        if (n >= 64)
            masks(b, delim, quote, &q, &d, &eol);
        else
            cdr_masks_tail(b, (size_t)n, delim, quote, &q, &d, &eol);
        if (closed_last && !((q | d | eol) & 1))
            return CDR_FALLBACK;
        inside = cdr_prefix_xor(q) ^ carry;
        closing = q & ~inside;
        ends = eol & ~inside;
        if (ends)
            limit = ends ^ (ends - 1);  /* up to and including the record's end */
        else if (n >= 64)
            limit = ~(uint64_t)0;
        else
            return CDR_FALLBACK;        /* the buffer ends inside the record */
        /* a closing quote followed by something else; an opening one after something else */
        if ((closing & ~(((q | d | eol) >> 1) | top) & limit)
                || (q & inside & ~(((d | eol | closing) << 1) | before) & limit))
            return CDR_FALLBACK;
        bits = d & ~inside & limit;
        k += __builtin_popcountll(bits);
        for (; bits && fp < kept; fp++) {   /* the fields kept; the rest are counted */
            e = b + cdr_lowest(bits);
            cdr_put_field(s, e, quote, fp);
            s = e + 1;
            bits &= bits - 1;
        }
        if (ends) {
            e = b + cdr_lowest(ends);
            if (fp < kept)
                cdr_put_field(s, e, quote, fp);
            if (e[0] == '\r') {
                if (e + 1 >= end || e[1] != '\n')
                    return CDR_FALLBACK;
                *next_rec = e + 2;
            } else {
                *next_rec = e + 1;
            }
            if (e - r > max_record)
                return CDR_FALLBACK;
            *rec_end = e;
            *nf = k + 1;
            return CDR_OK;
        }
        carry = (uint64_t)0 - (inside >> 63);
        before = (d | eol | closing) >> 63;
        closed_last = (closing >> 63) != 0;
        b += 64;
    }
}

static int cdr_tokenize_baseline(const char *r, const char *end, char delim, char quote,
                                 int keep_fields, Py_ssize_t max_record, cdr_span *f, int *nf,
                                 const char **rec_end, const char **next_rec) {
    return cdr_tokenize_with(cdr_masks, r, end, delim, quote, keep_fields, max_record, f, nf,
                             rec_end, next_rec);
}

#if CDR_HAVE_AVX2
__attribute__((target("avx2,bmi,popcnt")))
static int cdr_tokenize_avx2(const char *r, const char *end, char delim, char quote,
                             int keep_fields, Py_ssize_t max_record, cdr_span *f, int *nf,
                             const char **rec_end, const char **next_rec) {
    return cdr_tokenize_with(cdr_masks_avx2, r, end, delim, quote, keep_fields, max_record, f,
                             nf, rec_end, next_rec);
}
#endif

/* 1 when this processor runs the AVX2 scan (AVX2, BMI1 and POPCNT: every x86-64 since
 * 2013). Checked at run time: the build needs no flag, and the module runs on older
 * processors too. */
static int cdr_avx2(void) {
#if CDR_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi")
           && __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

static cdr_tokenize_t cdr_tokenizer(int avx2) {
#if CDR_HAVE_AVX2
    if (avx2)
        return cdr_tokenize_avx2;
#endif
    (void)avx2;
    return cdr_tokenize_baseline;
}

/* The masks of 64 bytes as the scan chosen by avx2 finds them (for tests). */
static void cdr_block_masks(int avx2, const char *p, char delim, char quote,
                            uint64_t *quote_bits, uint64_t *delim_bits, uint64_t *eol_bits) {
#if CDR_HAVE_AVX2
    if (avx2) {
        cdr_masks_avx2(p, delim, quote, quote_bits, delim_bits, eol_bits);
        return;
    }
#endif
    cdr_masks(p, delim, quote, quote_bits, delim_bits, eol_bits);
}

#endif
