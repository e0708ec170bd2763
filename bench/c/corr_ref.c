/* Reference correlation kernel for bench/tagger.py: the classic streaming two-pointer.
 *
 * One pass over the merged tag stream. Each channel keeps a ring of its recent tag
 * times; a tag on channel 2 walks back over channel 1's ring while the time difference
 * is within reach (and vice versa), and every pair is binned with one integer
 * division. Bins follow the engine's convention: bin = (dt + (n_bins*binwidth)/2) /
 * binwidth, dt = t(ch2) - t(ch1), both signs. Built by the benchmark with gcc -O2.
 */
#include <stdint.h>

int64_t corr_two_pointer(const int64_t *t, const int32_t *c, int64_t n, int32_t ch1,
                         int32_t ch2, int64_t binwidth, int64_t n_bins, int64_t *hist,
                         int64_t *ring1, int64_t *ring2, int64_t ring_mask) {
    const int64_t span = binwidth * n_bins;
    const int64_t off = span / 2;
    const int64_t dmax = span - 1 - off;
    int64_t n1 = 0, n2 = 0; /* tags pushed into each ring so far */
    int64_t pairs = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t ti = t[i];
        const int32_t ci = c[i];
        if (ci == ch2) {
            for (int64_t k = n1 - 1; k >= 0 && k > n1 - 1 - (ring_mask + 1); k--) {
                const int64_t dt = ti - ring1[k & ring_mask];
                if (dt > dmax) break;
                hist[(dt + off) / binwidth]++;
                pairs++;
            }
            ring2[n2 & ring_mask] = ti;
            n2++;
        } else if (ci == ch1) {
            for (int64_t k = n2 - 1; k >= 0 && k > n2 - 1 - (ring_mask + 1); k--) {
                const int64_t dt = ring2[k & ring_mask] - ti; /* <= 0 */
                if (dt < -off) break;
                hist[(dt + off) / binwidth]++;
                pairs++;
            }
            ring1[n1 & ring_mask] = ti;
            n1++;
        }
    }
    return pairs;
}
