/*
 * data.h - synthetic, labelled datasets that mica makes itself (no download): the edge
 * sensor-analysis task of the embedded default model. A record is a prompt ("分析传感器数据:
 * 温度28.5℃, 湿度62%" or "Analyze sensor data: temperature 28.5°C, humidity 62%"), the
 * reference answer (status, the readings out of range and why, a recommended action, in the
 * prompt's language, every number copied exactly) and its label. The thresholds are a table
 * documented in docs/sensors.md; the generator is deterministic for a seed.
 *
 * Depends on core only. Called by `mica data` (src/cli/cmd_data.c), the tests and the
 * evaluation of the default model.
 */
#ifndef MICA_DATA_H
#define MICA_DATA_H

#include "core/core.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum data_lang { DATA_ZH, DATA_EN } data_lang;

/* base: the factory the default model is trained for; site_b: another site (a cold store)
 * with other thresholds and other labels, for the LoRA demo. */
typedef enum data_task { DATA_TASK_BASE, DATA_TASK_SITE_B } data_task;

typedef enum data_sensor {
    DATA_TEMPERATURE,
    DATA_HUMIDITY,
    DATA_PRESSURE,
    DATA_VIBRATION,
    DATA_VOLTAGE,
    DATA_CO2,
    DATA_N_SENSORS
} data_sensor;

/* Status levels, worst last. */
typedef enum data_level { DATA_NORMAL, DATA_WARNING, DATA_CRITICAL } data_level;

typedef struct data_sensor_reading {
    data_sensor sensor;
    char value[16]; /* the number exactly as written in the prompt */
    char unit[8];   /* "°C", "℃", "%", "kPa", "hPa", "mm/s", "V", "ppm" */
    data_level level;
    int direction; /* -1 below the normal range, +1 above, 0 within */
} data_sensor_reading;

typedef struct data_record {
    data_lang lang;
    data_task task;
    data_sensor_reading readings[DATA_N_SENSORS];
    int n_readings;
    data_level status;
    core_buf prompt, answer; /* UTF-8 text */
} data_record;

typedef struct data_sensors_opts {
    uint64_t seed;
    bool zh, en; /* languages drawn from (at least one) */
    data_task task;
} data_sensors_opts;

/* Record number `index` of the stream that opts describes (independent of the others, so a
 * record can be regenerated alone). r is initialised here; free with data_record_free. */
mica_status data_sensors_record(const data_sensors_opts *opts, uint64_t index, data_record *r,
                                mica_err *err);
void data_record_free(data_record *r);

/* The label of a level in the task's vocabulary ("normal"/"warning"/"critical" for base,
 * "ok"/"alert"/"shutdown" for site-b) and language ("正常"/"警告"/"严重", "合格"/"注意"/"停机"). */
const char *data_level_label(data_task task, data_lang lang, data_level level);
/* The level whose label (in either language) the text's status line names, or -1. Reads a
 * model's answer: "Status: warning. ..." / "状态:警告。...". */
int data_answer_level(data_task task, const char *text, size_t len);

/* Appends one JSON line: {"prompt", "completion", "label", "lang", "task"}. */
mica_status data_record_jsonl(const data_record *r, core_buf *out);

#endif
