/* The parser's structural scan: where the quotes, delimiters and line ends of 64 bytes
 * are, as three bit masks (bit i for byte i), and the bit operations that read them.
 *
 * x86-64 compares 16 bytes an instruction (SSE2, which every x86-64 processor has);
 * other processors take the portable loop, which gives the same masks.
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

#endif
