/* Request dispatch (PROTOCOL.md "Types"). Every handler checks the payload length and every index and
 * range before touching the arena, so no byte sequence from the host can write or read outside a tensor.
 * State is static: the RX buffer, the TX staging buffer, the per-operator cycles of the last inference and
 * the offload payload buffer (in the model's hil_offload.c). No heap. */
#include "hil_app.h"

#include <string.h>

#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
#include "hil_crash_test.h"
#endif
#include "hil_crc.h"
#include "hil_model.h"
#include "hil_offload.h"
#include "hil_port.h"
#include "hil_protocol.h"

/* Set by the Makefile; the fallbacks keep a hand build working. */
#ifndef FW_VERSION
#define FW_VERSION "unknown"
#endif
#ifndef BUILD_ID
#define BUILD_ID "unknown"
#endif

#define INFO_FIXED_BYTES 148u
#define TENSOR_DESC_BYTES 32u
#define INFER_FIXED_BYTES 20u
#define LOAD_HEADER_BYTES 5u  /* u8 index, u32 offset */
#define READ_REQUEST_BYTES 7u /* u8 index, u32 offset, u16 length */
#define READ_REPLY_HEADER 5u  /* u8 index, u32 offset */

#define OFFLOAD_FIXED_BYTES 52u
#define DIGEST_FIXED_BYTES 20u

#define INFO_FLAG_DETERMINISTIC 0x0001u
#define INFO_FLAG_DIGEST 0x0002u /* this firmware answers INFER_DIGEST */
#define INFO_FLAG_KERNELS 0x0004u /* INFO ends with the kernels string (hil_port_kernels()) */
#define INFO_KERNELS_BYTES 32u
#define INFER_FLAG_INLINE 0x01u
#define OFFLOAD_FLAG_OVERFLOW 0x01u

static hil_rx_t rx;
static hil_tx_t tx;

/* Outputs are only meaningful after an INFER and until the next LOAD_INPUT (the model may reuse the
 * input's arena bytes for outputs). READ_OUTPUT outside that window is refused instead of returning junk. */
static int outputs_valid;

/* Set by an inference of a model whose arena reuses its input bytes (hil_model_info.inputs_consumed); cleared by
 * LOAD_INPUT. While set, INFER and INFER_OFFLOAD (and INFER_DIGEST without inputs) are refused: they would run on
 * overwritten inputs. The host loads the inputs again and repeats the request (hil/transport/client.py). */
static int inputs_consumed;

static int refuse_consumed_inputs(const hil_frame_t *f)
{
    if (inputs_consumed) {
        hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, "input overwritten by the last inference: LOAD_INPUT again");
    }
    return inputs_consumed;
}

/* Cycles of each operator in the last inference, written by hil_model_op_done() (generated code calls it after
 * every kernel). Every kernel operator is overwritten by each inference; entries of operators without a kernel
 * stay 0, so no clearing is needed. */
static uint64_t op_cycles[HIL_MAX_OPS];
static uint64_t op_last;

void hil_model_op_done(int op_index)
{
    uint64_t now = hil_port_cycles();

    if (op_index >= 0 && op_index < HIL_MAX_OPS) {
        op_cycles[op_index] = now - op_last;
    }
    op_last = now;
}

/* ---- error messages without printf (not every port has a usable one) ---- */

typedef struct {
    char text[96];
    size_t n;
} msg_t;

static void msg_str(msg_t *m, const char *s)
{
    while (*s != '\0' && m->n + 1 < sizeof m->text) {
        m->text[m->n++] = *s++;
    }
    m->text[m->n] = '\0';
}

static void msg_u32(msg_t *m, uint32_t v)
{
    char digits[10];
    int k = 0;

    do {
        uint32_t q = v / 10u;
        digits[k++] = (char)('0' + (v - q * 10u));
        v = q;
    } while (v != 0 && k < 10);
    while (k > 0 && m->n + 1 < sizeof m->text) {
        m->text[m->n++] = digits[--k];
    }
    m->text[m->n] = '\0';
}

static void msg_hex8(msg_t *m, uint8_t v)
{
    static const char hex[] = "0123456789abcdef";
    char s[5];

    s[0] = '0';
    s[1] = 'x';
    s[2] = hex[v >> 4];
    s[3] = hex[v & 0x0Fu];
    s[4] = '\0';
    msg_str(m, s);
}

static void msg_init(msg_t *m, const char *s)
{
    m->n = 0;
    m->text[0] = '\0';
    msg_str(m, s);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void bad_length(const hil_frame_t *f, const char *what)
{
    msg_t m;

    msg_init(&m, what);
    msg_str(&m, ": payload of ");
    msg_u32(&m, f->length);
    msg_str(&m, " bytes");
    hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, m.text);
}

/* Checks offset + n <= size without overflow; replies BAD_REQUEST and returns 0 if not. */
static int check_range(const hil_frame_t *f, const char *kind, uint8_t index, uint32_t offset, uint32_t n,
                       uint32_t size)
{
    msg_t m;

    if (offset <= size && n <= size - offset) {
        return 1;
    }
    msg_init(&m, "range ");
    msg_u32(&m, offset);
    msg_str(&m, "+");
    msg_u32(&m, n);
    msg_str(&m, " beyond ");
    msg_str(&m, kind);
    msg_str(&m, " ");
    msg_u32(&m, index);
    msg_str(&m, " of ");
    msg_u32(&m, size);
    msg_str(&m, " bytes");
    hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, m.text);
    return 0;
}

static int check_index(const hil_frame_t *f, const char *kind, uint8_t index, uint8_t count)
{
    msg_t m;

    if (index < count) {
        return 1;
    }
    msg_init(&m, kind);
    msg_str(&m, " index ");
    msg_u32(&m, index);
    msg_str(&m, " out of range (model has ");
    msg_u32(&m, count);
    msg_str(&m, ")");
    hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, m.text);
    return 0;
}

/* ---- handlers ---- */

static void write_tensor_desc(const hil_tensor_info_t *t)
{
    uint32_t scale_bits;
    int i;

    memcpy(&scale_bits, &t->scale, sizeof scale_bits); /* IEEE 754 bits, sent little-endian */
    hil_tx_u8(&tx, t->dtype);
    hil_tx_u8(&tx, t->rank);
    hil_tx_u16(&tx, 0);
    for (i = 0; i < 4; i++) {
        hil_tx_u32(&tx, t->dims[i]);
    }
    hil_tx_u32(&tx, (uint32_t)t->zero_point);
    hil_tx_u32(&tx, scale_bits);
    hil_tx_u32(&tx, t->bytes);
}

static void handle_hello(const hil_frame_t *f)
{
    const hil_model_info_t *mi = &hil_model_info;
    uint32_t n_tensors = (uint32_t)mi->n_inputs + mi->n_outputs;
    uint32_t i;

    if (f->length != 0) {
        bad_length(f, "HELLO takes no payload");
        return;
    }
    hil_tx_begin(&tx, HIL_T_HELLO | HIL_REPLY_BIT, f->seq,
                 (uint16_t)(INFO_FIXED_BYTES + TENSOR_DESC_BYTES * n_tensors + INFO_KERNELS_BYTES));
    hil_tx_u16(&tx, HIL_PROTOCOL_VERSION);
    hil_tx_u16(&tx, (uint16_t)((hil_port_cycles_deterministic() ? INFO_FLAG_DETERMINISTIC : 0u) | INFO_FLAG_DIGEST |
                               INFO_FLAG_KERNELS));
    hil_tx_str(&tx, FW_VERSION, 16);
    hil_tx_str(&tx, BUILD_ID, 32);
    hil_tx_str(&tx, hil_port_name(), 16);
    hil_tx_str(&tx, mi->name, 32);
    hil_tx_write(&tx, mi->sha256, 32);
    hil_tx_u32(&tx, mi->arena_bytes);
    hil_tx_u32(&tx, hil_port_clock_hz());
    hil_tx_u32(&tx, HIL_RX_MAX);
    hil_tx_u8(&tx, mi->n_inputs);
    hil_tx_u8(&tx, mi->n_outputs);
    hil_tx_u16(&tx, 0);
    for (i = 0; i < mi->n_inputs; i++) {
        write_tensor_desc(&mi->inputs[i]);
    }
    for (i = 0; i < mi->n_outputs; i++) {
        write_tensor_desc(&mi->outputs[i]);
    }
    hil_tx_str(&tx, hil_port_kernels(), INFO_KERNELS_BYTES);
    hil_tx_end(&tx);
}

static void handle_echo(const hil_frame_t *f)
{
    /* The receiver already refused anything longer than HIL_RX_MAX. */
    hil_tx_begin(&tx, HIL_T_ECHO | HIL_REPLY_BIT, f->seq, f->length);
    hil_tx_write(&tx, f->payload, f->length);
    hil_tx_end(&tx);
}

static void handle_load_input(const hil_frame_t *f)
{
    const hil_tensor_info_t *t;
    uint8_t index;
    uint32_t offset;
    uint32_t n;

    if (f->length < LOAD_HEADER_BYTES) {
        bad_length(f, "LOAD_INPUT needs u8 index, u32 offset, data");
        return;
    }
    index = f->payload[0];
    offset = get_u32(f->payload + 1);
    n = (uint32_t)f->length - LOAD_HEADER_BYTES;
    if (!check_index(f, "input", index, hil_model_info.n_inputs)) {
        return;
    }
    t = &hil_model_info.inputs[index];
    if (!check_range(f, "input", index, offset, n, t->bytes)) {
        return;
    }
    memcpy(hil_model_arena() + t->arena_offset + offset, f->payload + LOAD_HEADER_BYTES, n);
    outputs_valid = 0;
    inputs_consumed = 0;

    hil_tx_begin(&tx, HIL_T_LOAD_INPUT | HIL_REPLY_BIT, f->seq, 9);
    hil_tx_u8(&tx, index);
    hil_tx_u32(&tx, offset);
    hil_tx_u32(&tx, n);
    hil_tx_end(&tx);
}

/* Runs the model; c0 is the cycle count just read, from which the first operator's cycles are counted. */
static int invoke(uint64_t c0)
{
    op_last = c0;
    inputs_consumed = hil_model_info.inputs_consumed != 0;
    return hil_model_invoke();
}

static void infer_failed(const hil_frame_t *f, int rc)
{
    msg_t m;

    outputs_valid = 0;
    msg_init(&m, "hil_model_invoke returned ");
    if (rc < 0) {
        msg_str(&m, "-");
        msg_u32(&m, (uint32_t)(-(rc + 1)) + 1u);
    } else {
        msg_u32(&m, (uint32_t)rc);
    }
    hil_send_error(f->seq, HIL_E_INFER_FAILED, f->type, m.text);
}

static void handle_infer(const hil_frame_t *f)
{
    const hil_model_info_t *mi = &hil_model_info;
    uint64_t c0, c1, t0, t1;
    uint32_t reply_bytes;
    int inline_outputs;
    int rc;
    uint32_t i;

    if (f->length != 0) {
        bad_length(f, "INFER takes no payload");
        return;
    }
    if (refuse_consumed_inputs(f)) {
        return;
    }

    /* Only the inference itself is inside the marker and the timestamps. */
    hil_port_marker(1);
    c0 = hil_port_cycles();
    t0 = hil_port_time_us();
    rc = invoke(c0);
    c1 = hil_port_cycles();
    t1 = hil_port_time_us();
    hil_port_marker(0);

    if (rc != 0) {
        infer_failed(f, rc);
        return;
    }
    outputs_valid = 1;

    /* Inline when the whole reply fits one frame; the running sum stops growing once it is too large. */
    reply_bytes = INFER_FIXED_BYTES + 4u * mi->n_outputs;
    for (i = 0; i < mi->n_outputs && reply_bytes <= HIL_MAX_PAYLOAD; i++) {
        reply_bytes += mi->outputs[i].bytes <= HIL_MAX_PAYLOAD ? mi->outputs[i].bytes : HIL_MAX_PAYLOAD + 1u;
    }
    inline_outputs = reply_bytes <= HIL_MAX_PAYLOAD;
    if (!inline_outputs) {
        reply_bytes = INFER_FIXED_BYTES + 4u * mi->n_outputs;
    }

    hil_tx_begin(&tx, HIL_T_INFER | HIL_REPLY_BIT, f->seq, (uint16_t)reply_bytes);
    hil_tx_u8(&tx, 0); /* status: ok; a failed run is answered with ERROR INFER_FAILED instead */
    hil_tx_u8(&tx, mi->n_outputs);
    hil_tx_u8(&tx, inline_outputs ? INFER_FLAG_INLINE : 0u);
    hil_tx_u8(&tx, 0);
    hil_tx_u64(&tx, c1 - c0);
    hil_tx_u64(&tx, t1 - t0);
    for (i = 0; i < mi->n_outputs; i++) {
        hil_tx_u32(&tx, mi->outputs[i].bytes);
    }
    if (inline_outputs) {
        for (i = 0; i < mi->n_outputs; i++) {
            hil_tx_write(&tx, hil_model_arena() + mi->outputs[i].arena_offset, mi->outputs[i].bytes);
        }
    }
    hil_tx_end(&tx);
}

/* A generated config is trusted to match the model it was generated with; these checks keep a mismatched
 * one (a hil_offload.c from another model) from reading outside the arena or sending an oversized frame. */
static int offload_int16(const hil_offload_config_t *cfg)
{
    return cfg->value_dtype == HIL_DTYPE_INT16;
}

static const char *offload_config_problem(const hil_offload_config_t *cfg)
{
    const hil_model_info_t *mi = &hil_model_info;

    if (memcmp(cfg->model_sha256, mi->sha256, sizeof mi->sha256) != 0) {
        return "offload config was generated for another model (sha256 differs)";
    }
    if (cfg->local_output >= mi->n_outputs || cfg->remote_output >= mi->n_outputs ||
        cfg->n_values * (offload_int16(cfg) ? 2u : 1u) != mi->outputs[cfg->remote_output].bytes ||
        mi->outputs[cfg->remote_output].dtype != (offload_int16(cfg) ? HIL_DTYPE_INT16 : HIL_DTYPE_INT8)) {
        return "offload config does not match the model's outputs";
    }
    if (offload_int16(cfg) && (cfg->n_int16_runs == 0u || cfg->int16_run_start == NULL ||
                               cfg->int16_run_code == NULL || cfg->code_buffer == NULL)) {
        return "offload config for int16 features is incomplete (runs or code buffer)";
    }
    if (cfg->bits < 1u || cfg->bits > 8u || cfg->int8_to_code == NULL || cfg->payload == NULL) {
        return "offload config is incomplete (bits, lookup table or payload buffer)";
    }
    if ((uint64_t)OFFLOAD_FIXED_BYTES + mi->outputs[cfg->local_output].bytes + cfg->payload_capacity >
        HIL_MAX_PAYLOAD) {
        return "offload payload buffer too large for one reply frame";
    }
    return NULL;
}

static void handle_infer_offload(const hil_frame_t *f)
{
    const hil_offload_config_t *cfg = hil_offload_config();
    const hil_tensor_info_t *local;
    const hil_tensor_info_t *remote;
    const char *problem;
    hil_offload_status_t st = HIL_OFFLOAD_OK;
    uint64_t c0, c1, c2, local_cycles = 0;
    uint32_t payload_len = 0;
    uint32_t i;
    int rc;

    if (f->length != 0) {
        bad_length(f, "INFER_OFFLOAD takes no payload");
        return;
    }
    if (refuse_consumed_inputs(f)) {
        return;
    }
    if (cfg == NULL) {
        hil_send_error(f->seq, HIL_E_UNSUPPORTED, f->type, "this firmware's model has no AgileNN offload config");
        return;
    }
    problem = offload_config_problem(cfg);
    if (problem != NULL) {
        hil_send_error(f->seq, HIL_E_UNSUPPORTED, f->type, problem);
        return;
    }
    local = &hil_model_info.outputs[cfg->local_output];
    remote = &hil_model_info.outputs[cfg->remote_output];

    /* The marker covers everything the device does per offloaded inference: model, quantize, compress. */
    hil_port_marker(1);
    c0 = hil_port_cycles();
    rc = invoke(c0);
    c1 = hil_port_cycles();
    if (rc == 0) {
        const int8_t *values = hil_model_arena() + remote->arena_offset;
        if (offload_int16(cfg)) {
            /* the arena offset is 16-byte aligned (hil/model/planner.py) */
            hil_offload_codes_from_int16((const int16_t *)(const void *)values, cfg->n_values, cfg->int16_run_start,
                                         cfg->int16_run_code, cfg->n_int16_runs, cfg->code_buffer);
            values = cfg->code_buffer;
        }
        st = hil_offload_compress(values, cfg->n_values, cfg->int8_to_code, cfg->bits, cfg->huffman_lengths,
                                  cfg->payload, cfg->payload_capacity, &payload_len);
    }
    c2 = hil_port_cycles();
    hil_port_marker(0);

    if (rc != 0) {
        infer_failed(f, rc);
        return;
    }
    outputs_valid = 1;
    if (st == HIL_OFFLOAD_BAD_ARGS) {
        hil_send_error(f->seq, HIL_E_UNSUPPORTED, f->type,
                       "offload config has an unsupported bit width or Huffman code lengths");
        return;
    }
    for (i = 0; i < cfg->n_local_ops; i++) {
        if (cfg->local_ops[i] < HIL_MAX_OPS) {
            local_cycles += op_cycles[cfg->local_ops[i]];
        }
    }
    if (local_cycles > c1 - c0) {
        local_cycles = c1 - c0; /* cannot happen: the local operators ran inside [c0, c1] */
    }

    hil_tx_begin(&tx, HIL_T_INFER_OFFLOAD | HIL_REPLY_BIT, f->seq,
                 (uint16_t)(OFFLOAD_FIXED_BYTES + local->bytes + payload_len));
    hil_tx_u8(&tx, 0); /* status: ok; a failed run is answered with ERROR instead */
    hil_tx_u8(&tx, st == HIL_OFFLOAD_OVERFLOW ? OFFLOAD_FLAG_OVERFLOW : 0u);
    hil_tx_u8(&tx, cfg->local_output);
    hil_tx_u8(&tx, cfg->bits);
    hil_tx_u64(&tx, (c1 - c0) - local_cycles); /* extractor: the model less the Local NN */
    hil_tx_u64(&tx, local_cycles);
    hil_tx_u64(&tx, c2 - c1); /* quantize + compress */
    hil_tx_u64(&tx, c2 - c0);
    hil_tx_u32(&tx, cfg->n_values); /* one code per value of the remote features */
    hil_tx_u32(&tx, payload_len);
    hil_tx_u32(&tx, cfg->payload_capacity);
    hil_tx_u32(&tx, local->bytes);
    hil_tx_write(&tx, hil_model_arena() + local->arena_offset, local->bytes);
    hil_tx_write(&tx, cfg->payload, payload_len);
    hil_tx_end(&tx);
}

/* INFER_DIGEST (PROTOCOL.md): optionally loads every input from the request, runs the model like INFER and
 * answers with one CRC-32 per output instead of the outputs. The inputs are written by every attempt, so a
 * resent request computes the same outputs even for a model that overwrites its input in the arena. */
static void handle_infer_digest(const hil_frame_t *f)
{
    const hil_model_info_t *mi = &hil_model_info;
    uint32_t in_bytes = 0;
    uint64_t c0, c1, t0, t1;
    const uint8_t *p;
    msg_t m;
    uint32_t i;
    int rc;

    for (i = 0; i < mi->n_inputs; i++) {
        in_bytes += mi->inputs[i].bytes;
    }
    if (f->length != 0 && f->length != in_bytes) {
        msg_init(&m, "INFER_DIGEST takes no payload or all ");
        msg_u32(&m, in_bytes);
        msg_str(&m, " input bytes, not ");
        msg_u32(&m, f->length);
        hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, m.text);
        return;
    }
    if (f->length != 0) {
        p = f->payload;
        for (i = 0; i < mi->n_inputs; i++) {
            memcpy(hil_model_arena() + mi->inputs[i].arena_offset, p, mi->inputs[i].bytes);
            p += mi->inputs[i].bytes;
        }
        outputs_valid = 0;
        inputs_consumed = 0;
    } else if (refuse_consumed_inputs(f)) {
        return;
    }

    hil_port_marker(1);
    c0 = hil_port_cycles();
    t0 = hil_port_time_us();
    rc = invoke(c0);
    c1 = hil_port_cycles();
    t1 = hil_port_time_us();
    hil_port_marker(0);

    if (rc != 0) {
        infer_failed(f, rc);
        return;
    }
    outputs_valid = 1;

    hil_tx_begin(&tx, HIL_T_INFER_DIGEST | HIL_REPLY_BIT, f->seq, (uint16_t)(DIGEST_FIXED_BYTES + 4u * mi->n_outputs));
    hil_tx_u8(&tx, 0); /* status: ok; a failed run is answered with ERROR INFER_FAILED instead */
    hil_tx_u8(&tx, mi->n_outputs);
    hil_tx_u8(&tx, 0); /* flags: none defined */
    hil_tx_u8(&tx, 0);
    hil_tx_u64(&tx, c1 - c0);
    hil_tx_u64(&tx, t1 - t0);
    for (i = 0; i < mi->n_outputs; i++) {
        hil_tx_u32(&tx, hil_crc32_update(0, (const uint8_t *)hil_model_arena() + mi->outputs[i].arena_offset,
                                         mi->outputs[i].bytes));
    }
    hil_tx_end(&tx);
}

static void handle_read_output(const hil_frame_t *f)
{
    const hil_tensor_info_t *t;
    uint8_t index;
    uint32_t offset;
    uint32_t n;

    if (f->length != READ_REQUEST_BYTES) {
        bad_length(f, "READ_OUTPUT needs u8 index, u32 offset, u16 length");
        return;
    }
    index = f->payload[0];
    offset = get_u32(f->payload + 1);
    n = (uint32_t)(f->payload[5] | (f->payload[6] << 8));
    if (!check_index(f, "output", index, hil_model_info.n_outputs)) {
        return;
    }
    t = &hil_model_info.outputs[index];
    if (!check_range(f, "output", index, offset, n, t->bytes)) {
        return;
    }
    if (n > HIL_MAX_PAYLOAD - READ_REPLY_HEADER) {
        hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, "READ_OUTPUT length above 65530");
        return;
    }
    if (!outputs_valid) {
        hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, "no INFER since the last LOAD_INPUT");
        return;
    }
    hil_tx_begin(&tx, HIL_T_READ_OUTPUT | HIL_REPLY_BIT, f->seq, (uint16_t)(READ_REPLY_HEADER + n));
    hil_tx_u8(&tx, index);
    hil_tx_u32(&tx, offset);
    hil_tx_write(&tx, hil_model_arena() + t->arena_offset + offset, n);
    hil_tx_end(&tx);
}

static void dispatch(const hil_frame_t *f)
{
    msg_t m;

    switch (f->type) {
    case HIL_T_HELLO:
        handle_hello(f);
        break;
    case HIL_T_ECHO:
        handle_echo(f);
        break;
    case HIL_T_LOAD_INPUT:
        handle_load_input(f);
        break;
    case HIL_T_INFER:
        handle_infer(f);
        break;
    case HIL_T_READ_OUTPUT:
        handle_read_output(f);
        break;
    case HIL_T_INFER_OFFLOAD:
        handle_infer_offload(f);
        break;
    case HIL_T_INFER_DIGEST:
        handle_infer_digest(f);
        break;
#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
    case HIL_T_DEBUG:
        hil_crash_test_request(f);
        break;
#endif
    default:
        msg_init(&m, "unknown request type ");
        msg_hex8(&m, f->type);
        hil_send_error(f->seq, HIL_E_UNKNOWN_TYPE, f->type, m.text);
        break;
    }
}

static void answer_event(hil_rx_event_t ev, const hil_frame_t *frame)
{
    msg_t m;

    if (ev == HIL_RX_FRAME) {
        dispatch(frame);
    } else if (ev == HIL_RX_BAD_CRC) {
        hil_send_error(frame->seq, HIL_E_BAD_CRC, frame->type, "payload crc mismatch");
    } else {
        msg_init(&m, "length ");
        msg_u32(&m, frame->length);
        msg_str(&m, " above rx_max ");
        msg_u32(&m, HIL_RX_MAX);
        hil_send_error(frame->seq, HIL_E_OVERSIZE, frame->type, m.text);
    }
}

int hil_app_run(void)
{
    int silent = 0; /* the last read timed out: nothing buffered can still complete */

    hil_rx_init(&rx);
    outputs_valid = 0;
#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
    hil_crash_test_boot();
#endif
    for (;;) {
        hil_frame_t frame;
        hil_rx_event_t ev;
        uint8_t *space;
        size_t room;
        int n;

        /* Answer everything already buffered before waiting on the port again. */
        while ((ev = hil_rx_next(&rx, &frame)) != HIL_RX_NEED_MORE) {
            answer_event(ev, &frame);
        }
        /* A frame cut short by silence (a host that died while sending) never completes: drop it and rescan
         * what followed it. Every byte held arrived before the silence, so repeat until none is left waiting. */
        if (silent && hil_rx_partial(&rx) > 0) {
            hil_rx_expire(&rx);
            continue;
        }
        silent = 0;
        hil_port_flush();

        space = hil_rx_space(&rx, &room);
        n = hil_port_read_timeout(space, room, hil_rx_partial(&rx) > 0 ? HIL_RX_GAP_US : HIL_PORT_FOREVER);
        if (n < 0) {
            return 0;
        }
        if (n == 0) {
            silent = 1;
            continue;
        }
        hil_rx_commit(&rx, (size_t)n);
    }
}
