/* The fuzz port (fuzz_support.h): hil_port.h implemented over the fuzz input, with the firmware's output
 * captured. Linked into the harnesses that run the firmware's main loop (receiver, handlers). */
#include "fuzz_support.h"

#include <stdlib.h>
#include <string.h>

#include "hil_app.h"
#include "hil_port.h"
#include "hil_protocol.h"

/* ---- the fuzz port ---- */

static fz_input_t *cur_in;
static uint8_t *out_buf;
static size_t out_cap;
static size_t out_start; /* first byte not yet taken */
static size_t out_len;
static size_t out_total;
static uint64_t cycles;
static int marker_on;

int hil_port_read_timeout(uint8_t *buf, size_t max, uint32_t timeout_us)
{
    fz_input_t *in = cur_in;
    size_t limit;

    FZ_CHECK(!marker_on, "the marker pin is high while the firmware waits for input");
    FZ_CHECK(max >= 1, "hil_rx_space() offered no room");
    FZ_CHECK(timeout_us == HIL_PORT_FOREVER || timeout_us == HIL_RX_GAP_US, "read timeout %u us",
             (unsigned)timeout_us);
    if (in->before_read != NULL) {
        in->before_read(in->ctx);
    }
    in->reads++;
    /* A silence at the current position ends a read that waits with a timeout (a candidate frame is held). A
     * read that waits forever holds no candidate: the silence changes nothing then, and is passed over. */
    while (in->next_silence < in->n_silences && in->silences[in->next_silence] <= in->pos) {
        int applies = in->silences[in->next_silence] == in->pos && timeout_us != HIL_PORT_FOREVER;

        in->next_silence++;
        if (applies) {
            in->silent_reads++;
            return 0;
        }
    }
    if (in->pos >= in->n) {
        return -1;
    }
    limit = in->n - in->pos;
    if (in->next_silence < in->n_silences && in->silences[in->next_silence] - in->pos < limit) {
        limit = in->silences[in->next_silence] - in->pos; /* the bytes after a silence arrive after it */
    }
    if (limit > max) {
        limit = max;
    }
    if (in->max_chunk != 0u) {
        size_t k = 1u + fz_xorshift(&in->rng) % in->max_chunk;
        if (k < limit) {
            limit = k;
        }
    }
    memcpy(buf, in->data + in->pos, limit);
    in->pos += limit;
    return (int)limit;
}

void hil_port_write(const uint8_t *buf, size_t n)
{
    FZ_CHECK(n <= 0x7FFFFFFFu, "write of %zu bytes", n);
    if (out_len + n > out_cap) {
        size_t cap = out_cap != 0u ? out_cap : 4096u;
        while (cap < out_len + n) {
            cap *= 2u;
        }
        out_buf = realloc(out_buf, cap);
        FZ_CHECK(out_buf != NULL, "out of memory");
        out_cap = cap;
    }
    memcpy(out_buf + out_len, buf, n);
    out_len += n;
    out_total += n;
}

void hil_port_flush(void)
{
}

/* Deterministic: a fixed step per read, so every run of an input repeats exactly. */
uint64_t hil_port_cycles(void)
{
    cycles += 1000u;
    return cycles;
}

uint32_t hil_port_clock_hz(void)
{
    return 1000000000u;
}

uint64_t hil_port_time_us(void)
{
    return cycles / 1000u;
}

int hil_port_cycles_deterministic(void)
{
    return 1;
}

void hil_port_marker(int on)
{
    FZ_CHECK((on != 0) != marker_on, "marker set to %d twice", on);
    marker_on = on != 0;
}

const char *hil_port_name(void)
{
    return "fuzz";
}

const char *hil_port_kernels(void)
{
    return "kernels portable";
}

int fz_run_app(fz_input_t *in)
{
    int rc;

    cur_in = in;
    out_start = 0;
    out_len = 0;
    out_total = 0;
    cycles = 0;
    marker_on = 0;
    in->pos = 0;
    in->next_silence = 0;
    in->reads = 0;
    in->silent_reads = 0;
    rc = hil_app_run();
    FZ_CHECK(!marker_on, "the marker pin is left high");
    cur_in = NULL;
    return rc;
}

const uint8_t *fz_output(size_t *n)
{
    *n = out_len - out_start;
    return out_buf != NULL ? out_buf + out_start : (const uint8_t *)"";
}

void fz_output_take(size_t n)
{
    FZ_CHECK(n <= out_len - out_start, "took more output than there is");
    out_start += n;
    if (out_start == out_len) {
        out_start = 0;
        out_len = 0;
    }
}

size_t fz_output_total(void)
{
    return out_total;
}
