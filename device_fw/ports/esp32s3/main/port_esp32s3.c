/* ESP32-S3 port of the HIL firmware (ESP-IDF v5.x): the protocol and the ESP-IDF console share UART0, cycles
 * from CCOUNT, microseconds from esp_timer and a GPIO marker for the power analyzer's trigger. Everything else
 * is the shared core. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/gpio.h"
#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_err.h"
#include "esp_log.h"
#include "esp_private/esp_clk.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"
#include "soc/uart_pins.h"

#include "hil_app.h"
#include "hil_port.h"

#define HIL_UART UART_NUM_0
/* The host sends one request and waits for its reply, so the ring buffer needs to hold about one frame
 * (rx_max 4096 + 11 bytes) while the task is busy; twice that leaves room for a resent request. */
#define HIL_UART_RX_BUF (2 * 4096 + 256)
/* Core 1 (APP CPU): core 0 runs ESP-IDF's own tasks (esp_timer, IPC) and, because app_main installs the UART
 * driver there, the UART interrupt. The inference core then sees only its FreeRTOS tick. One core, always the
 * same, also means every CCOUNT reading comes from the same counter. */
#ifdef CONFIG_FREERTOS_UNICORE
#define HIL_TASK_CORE 0
#else
#define HIL_TASK_CORE 1
#endif
/* Above every application task, below the IPC tasks (priority 24) that ESP-IDF needs for cross-core calls. */
#define HIL_TASK_PRIO 10

static const char *TAG = "hil";
static uint32_t s_clock_hz;

/* ---- console text between frames ----
 * UART0 carries the protocol and the ESP-IDF console: the ROM's boot text, the bootloader's and the app's log
 * lines and the panic handler's output, which the host keeps as the device's console (PROTOCOL.md "Console
 * text"). A log line written while the HIL task is sending a frame would land inside it, so ESP-IDF log output
 * (any task) is gathered here by log_vprintf() and written by the HIL task only between frames: in
 * hil_port_flush(), after a reply, and while it waits for a request. The panic handler writes directly, which
 * can only cut a frame that the crash has cut already. */
#define HIL_LOG_BUF 2048
#define HIL_LOG_LINE 160

static char s_log_buf[HIL_LOG_BUF];
static size_t s_log_len;
static uint32_t s_log_dropped;
static portMUX_TYPE s_log_mux = portMUX_INITIALIZER_UNLOCKED;

static int log_vprintf(const char *fmt, va_list args)
{
    char line[HIL_LOG_LINE];
    int n = vsnprintf(line, sizeof line, fmt, args);
    size_t len;

    if (n <= 0) {
        return n;
    }
    len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    taskENTER_CRITICAL(&s_log_mux);
    if (s_log_len + len <= sizeof s_log_buf) {
        memcpy(s_log_buf + s_log_len, line, len);
        s_log_len += len;
    } else {
        s_log_dropped++;
    }
    taskEXIT_CRITICAL(&s_log_mux);
    return n;
}

/* HIL task only, and only between frames. */
static void log_drain(void)
{
    static char out[HIL_LOG_BUF];
    size_t n;
    uint32_t dropped;

    taskENTER_CRITICAL(&s_log_mux);
    n = s_log_len;
    memcpy(out, s_log_buf, n);
    s_log_len = 0;
    dropped = s_log_dropped;
    s_log_dropped = 0;
    taskEXIT_CRITICAL(&s_log_mux);
    if (n > 0) {
        uart_write_bytes(HIL_UART, out, n);
    }
    if (dropped > 0) {
        char note[64];
        int k = snprintf(note, sizeof note, "W hil: %u log lines dropped (buffer full)\r\n", (unsigned)dropped);
        if (k > 0) {
            uart_write_bytes(HIL_UART, note, (size_t)k < sizeof note ? (size_t)k : sizeof note - 1);
        }
    }
}

/* Ticks covering at least `ms`: a wait of k ticks may end up to one tick period early, so one more. */
static TickType_t ticks_for_ms(uint32_t ms)
{
    return (TickType_t)((ms + portTICK_PERIOD_MS - 1u) / portTICK_PERIOD_MS) + 1u;
}

int hil_port_read_timeout(uint8_t *buf, size_t max, uint32_t timeout_us)
{
    int got;

    if (max == 0) {
        return 0;
    }
    if (timeout_us == HIL_PORT_FOREVER) {
        /* Between frames: write pending log text while waiting for the first byte of a request. */
        do {
            log_drain();
            got = uart_read_bytes(HIL_UART, buf, 1, ticks_for_ms(100));
        } while (got <= 0);
    } else {
        got = uart_read_bytes(HIL_UART, buf, 1, ticks_for_ms((timeout_us + 999u) / 1000u));
        if (got <= 0) {
            return 0; /* silence (or a driver error, which a UART cannot recover from better than by waiting) */
        }
    }
    /* Then take whatever else has already arrived without waiting: the core wants "at least one byte", and
     * waiting for `max` bytes would stall on a frame shorter than the buffer. A UART has no end of input, so
     * this never returns -1. */
    size_t avail = 0;
    if (uart_get_buffered_data_len(HIL_UART, &avail) != ESP_OK) {
        avail = 0;
    }
    if (avail > max - 1) {
        avail = max - 1;
    }
    int more = avail > 0 ? uart_read_bytes(HIL_UART, buf + 1, (uint32_t)avail, 0) : 0;
    return 1 + (more > 0 ? more : 0);
}

void hil_port_write(const uint8_t *buf, size_t n)
{
    /* No TX ring buffer is installed, so this returns once the bytes are in the hardware FIFO. */
    uart_write_bytes(HIL_UART, buf, n);
}

void hil_port_flush(void)
{
    /* Called by the core after its replies, between frames. */
    log_drain();
    uart_wait_tx_done(HIL_UART, portMAX_DELAY);
}

uint64_t hil_port_cycles(void)
{
    /* CCOUNT is 32 bits and wraps every 2^32 / 240 MHz = 17.9 s. The difference of two readings modulo 2^32
     * covers a gap of less than one period; for longer gaps (a very slow inference) the microsecond timer says
     * how many whole periods passed. CCOUNT is per core: all calls come from the task pinned to
     * HIL_TASK_CORE. */
    static uint32_t last_ccount;
    static int64_t last_us;
    static uint64_t total;
    uint32_t now = esp_cpu_get_cycle_count();
    int64_t now_us = esp_timer_get_time();
    uint32_t delta = now - last_ccount; /* modulo 2^32 */
    uint64_t approx = (uint64_t)(now_us - last_us) * (s_clock_hz / 1000000u);
    uint64_t wraps = approx > delta ? (approx - delta + (1ull << 31)) >> 32 : 0;
    total += (uint64_t)delta + (wraps << 32);
    last_ccount = now;
    last_us = now_us;
    return total;
}

uint32_t hil_port_clock_hz(void)
{
    return s_clock_hz;
}

uint64_t hil_port_time_us(void)
{
    return (uint64_t)esp_timer_get_time();
}

int hil_port_cycles_deterministic(void)
{
    return 0;
}

void hil_port_marker(int on)
{
    gpio_set_level((gpio_num_t)CONFIG_HIL_MARKER_GPIO, on ? 1 : 0);
}

const char *hil_port_name(void)
{
    return "esp32s3";
}

/* Which kernels run the model, for INFO / `hil info`: "kernels esp-nn <version>" with CONFIG_HIL_USE_ESP_NN=y
 * (esp_nn_dispatch.c; the version is the ESP-NN release the component manager resolved, " ansi" appended when
 * ESP-NN is built without its vector kernels; main/CMakeLists.txt), else "kernels portable". At most 28
 * characters for a 1.x.y version. Declared here until hil_port.h has it. */
#ifndef HIL_ESP_NN_VERSION
#define HIL_ESP_NN_VERSION "unknown"
#endif
const char *hil_port_kernels(void)
{
#ifdef HIL_USE_ESP_NN
    return "kernels esp-nn " HIL_ESP_NN_VERSION;
#else
    return "kernels portable";
#endif
}

static void hil_task(void *arg)
{
    (void)arg;
    hil_app_run();
    /* Only reached if the core gives up; a fresh boot is easier for the host to recognise than silence. */
    esp_restart();
}

void app_main(void)
{
    /* Read once: power management is disabled (sdkconfig.defaults), so the CPU clock never changes. */
    s_clock_hz = (uint32_t)esp_clk_cpu_freq();

    /* The marker idles low; set the level before enabling the output so the pin never glitches high. */
    ESP_ERROR_CHECK(gpio_set_level((gpio_num_t)CONFIG_HIL_MARKER_GPIO, 0));
    const gpio_config_t marker = {
        .pin_bit_mask = 1ULL << CONFIG_HIL_MARKER_GPIO,
        .mode = GPIO_MODE_OUTPUT,
        .pull_up_en = GPIO_PULLUP_DISABLE,
        .pull_down_en = GPIO_PULLDOWN_DISABLE,
        .intr_type = GPIO_INTR_DISABLE,
    };
    ESP_ERROR_CHECK(gpio_config(&marker));

    const uart_config_t uart = {
        .baud_rate = CONFIG_HIL_UART_BAUD,
        .data_bits = UART_DATA_8_BITS,
        .parity = UART_PARITY_DISABLE,
        .stop_bits = UART_STOP_BITS_1,
        .flow_ctrl = UART_HW_FLOWCTRL_DISABLE,
        .source_clk = UART_SCLK_DEFAULT, /* APB, 80 MHz: 2 Mbaud is an exact divider */
    };
    /* Installed from app_main, which runs on core 0: the driver's interrupt is allocated there, away from the
     * core that runs the inference. */
    ESP_ERROR_CHECK(uart_driver_install(HIL_UART, HIL_UART_RX_BUF, 0, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(HIL_UART, &uart));
    /* The default UART0 pins (GPIO43 TX, GPIO44 RX), the console's own, set explicitly. */
    ESP_ERROR_CHECK(
        uart_set_pin(HIL_UART, U0TXD_GPIO_NUM, U0RXD_GPIO_NUM, UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE));

    /* From here on, log lines go out only between frames (log_vprintf above). */
    esp_log_set_vprintf(log_vprintf);
    ESP_LOGI(TAG, "ready: protocol on UART0 at %d baud, console text between frames, %s", CONFIG_HIL_UART_BAUD,
             hil_port_kernels());

    if (xTaskCreatePinnedToCore(hil_task, "hil", CONFIG_HIL_TASK_STACK_SIZE, NULL, HIL_TASK_PRIO, NULL,
                                HIL_TASK_CORE) != pdPASS) {
        abort();
    }
    /* app_main returns and its task is deleted; the HIL task runs forever. */
}
