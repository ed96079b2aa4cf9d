/*
 * sensors.c - the sensor-analysis dataset (data.h): readings drawn so that every status
 * occurs often, prompts in varied phrasings, answers in one fixed shape per language (a
 * small model learns the shape and spends its capacity on the numbers and thresholds).
 * The thresholds below are the ones docs/sensors.md documents; a reading's level is decided
 * from the number as printed, so labels and text always agree.
 */
#include "data/data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Normal and warning ranges in the canonical unit; outside the warning range is critical.
 * lo = -INFINITY: no lower limit. */
typedef struct band {
    double nlo, nhi, wlo, whi;
} band;

static const band bands[2][DATA_N_SENSORS] = {
    [DATA_TASK_BASE] =
        {
            [DATA_TEMPERATURE] = {10, 35, 0, 45},
            [DATA_HUMIDITY] = {30, 70, 20, 85},
            [DATA_PRESSURE] = {95, 105, 90, 110},
            [DATA_VIBRATION] = {-INFINITY, 4.5, -INFINITY, 7.1},
            [DATA_VOLTAGE] = {210, 240, 200, 250},
            [DATA_CO2] = {-INFINITY, 1000, -INFINITY, 2000},
        },
    [DATA_TASK_SITE_B] =
        {
            [DATA_TEMPERATURE] = {2, 8, 0, 12},
            [DATA_HUMIDITY] = {40, 80, 30, 90},
            [DATA_PRESSURE] = {97, 103, 93, 107},
            [DATA_VIBRATION] = {-INFINITY, 2.8, -INFINITY, 4.5},
            [DATA_VOLTAGE] = {216, 244, 207, 253},
            [DATA_CO2] = {-INFINITY, 800, -INFINITY, 1500},
        },
};

/* Physical limits of the drawn values (canonical unit). */
static const double phys_lo[DATA_N_SENSORS] = {-30, 0, 60, 0, 150, 300};
static const double phys_hi[DATA_N_SENSORS] = {90, 100, 140, 20, 300, 5000};
/* Decimals printed (pressure: in kPa; hPa values are printed whole). */
static const int decimals[DATA_N_SENSORS] = {1, 0, 1, 2, 0, 0};

static const char *const labels[2][2][3] = {
    [DATA_TASK_BASE] =
        {[DATA_ZH] = {"正常", "警告", "严重"}, [DATA_EN] = {"normal", "warning", "critical"}},
    [DATA_TASK_SITE_B] =
        {[DATA_ZH] = {"合格", "注意", "停机"}, [DATA_EN] = {"ok", "alert", "shutdown"}},
};

static const char *const names_zh[DATA_N_SENSORS][2] = {
    {"温度", "温度"}, {"湿度", "湿度"}, {"压力", "气压"},
    {"振动", "振动"}, {"电压", "电压"}, {"CO2浓度", "二氧化碳"},
};
static const char *const names_en[DATA_N_SENSORS][2] = {
    {"temperature", "temp"},    {"humidity", "humidity"}, {"pressure", "pressure"},
    {"vibration", "vibration"}, {"voltage", "voltage"},   {"CO2", "CO2"},
};

/* Actions by sensor and direction (0: below the range, 1: above). */
static const char *const actions_zh[DATA_N_SENSORS][2] = {
    {"检查加热系统", "检查冷却和通风"}, {"检查加湿设备", "检查除湿设备"},
    {"检查管路是否泄漏", "检查泄压阀"}, {"检查轴承和对中", "检查轴承和对中"},
    {"检查供电电源", "检查供电电源"},   {"加强通风", "加强通风"},
};
static const char *const actions_en[DATA_N_SENSORS][2] = {
    {"check the heating", "check cooling and ventilation"},
    {"check the humidifier", "check the dehumidifier"},
    {"check the lines for leaks", "check the relief valve"},
    {"inspect bearings and alignment", "inspect bearings and alignment"},
    {"check the power supply", "check the power supply"},
    {"increase ventilation", "increase ventilation"},
};

static const char *const prefix_zh[] = {"分析传感器数据:", "分析传感器数据：",
                                        "请分析以下传感器读数:", "传感器读数:", "设备监测数据:"};
static const char *const prefix_en[] = {
    "Analyze sensor data:", "Analyse the sensor readings:", "Sensor readings:", "Please analyze:",
    "Check these readings:"};
static const char *const sep_zh[] = {", ", "，", "、", "; "};
static const char *const sep_en[] = {", ", "; ", ", "};

#define PICK(rng, arr) ((arr)[core_rng_below((rng), sizeof(arr) / sizeof((arr)[0]))])

const char *data_level_label(data_task task, data_lang lang, data_level level)
{
    return labels[task][lang][level];
}

static data_level classify(const band *b, double v, int *direction)
{
    *direction = v < b->nlo ? -1 : v > b->nhi ? 1 : 0;
    if (!*direction) return DATA_NORMAL;
    return v >= b->wlo && v <= b->whi ? DATA_WARNING : DATA_CRITICAL;
}

/* A value whose level is `want` (normal 70 %, warning 20 %, critical 10 % of readings). */
static double draw_value(core_rng *rng, const band *b, data_sensor s)
{
    const double u = core_rng_uniform(rng);
    const data_level want = u < 0.7 ? DATA_NORMAL : u < 0.9 ? DATA_WARNING : DATA_CRITICAL;
    const bool two_sided = isfinite(b->nlo);
    const bool low = two_sided && core_rng_below(rng, 2) == 0;
    double lo, hi;
    if (want == DATA_NORMAL) {
        lo = two_sided ? b->nlo : phys_lo[s];
        hi = b->nhi;
    } else if (want == DATA_WARNING) {
        lo = low ? b->wlo : b->nhi;
        hi = low ? b->nlo : b->whi;
    } else {
        lo = low ? fmax(phys_lo[s], b->wlo - (b->nlo - b->wlo) * 3) : b->whi;
        hi = low ? b->wlo : fmin(phys_hi[s], b->whi + (b->whi - b->nhi) * 3);
    }
    return lo + (hi - lo) * core_rng_uniform(rng);
}

static void make_reading(core_rng *rng, data_task task, data_lang lang, data_sensor s,
                         data_sensor_reading *r)
{
    const band *b = &bands[task][s];
    const double v = draw_value(rng, b, s);
    r->sensor = s;
    double canonical;
    if (s == DATA_PRESSURE && core_rng_below(rng, 3) == 0) {
        snprintf(r->value, sizeof r->value, "%.0f", v * 10);
        strcpy(r->unit, "hPa");
        canonical = strtod(r->value, NULL) / 10;
    } else {
        snprintf(r->value, sizeof r->value, "%.*f", decimals[s], v);
        canonical = strtod(r->value, NULL);
        static const char *const units[DATA_N_SENSORS] = {"°C", "%", "kPa", "mm/s", "V", "ppm"};
        strcpy(r->unit, units[s]);
        if (s == DATA_TEMPERATURE && lang == DATA_ZH && core_rng_below(rng, 4))
            strcpy(r->unit, "℃");
    }
    r->level = classify(b, canonical, &r->direction);
}

/* English puts a space between a number and its unit, except for °C and %. */
static bool unit_spaced(data_lang lang, const char *unit)
{
    return lang == DATA_EN && strcmp(unit, "°C") && strcmp(unit, "%");
}

/* The limit the reading crossed, in its own unit: the normal bound for a warning, the warning
 * bound for a critical reading. */
static void limit_text(data_task task, data_lang lang, const data_sensor_reading *r, char *buf,
                       size_t cap)
{
    const band *b = &bands[task][r->sensor];
    double lim = r->level == DATA_WARNING ? (r->direction < 0 ? b->nlo : b->nhi)
                                          : (r->direction < 0 ? b->wlo : b->whi);
    if (!strcmp(r->unit, "hPa")) lim *= 10;
    snprintf(buf, cap, "%g%s%s", lim, unit_spaced(lang, r->unit) ? " " : "", r->unit);
}

/* "temperature 28.5°C", "vibration 3.20 mm/s" (en) / "温度28.5℃" (zh). */
static bool put_reading(core_buf *b, data_lang lang, const data_sensor_reading *r, const char *name)
{
    const bool spaced = unit_spaced(lang, r->unit);
    return core_buf_printf(b, "%s%s%s%s%s", name, lang == DATA_EN ? " " : "", r->value,
                           spaced ? " " : "", r->unit);
}

static bool write_prompt(core_rng *rng, data_record *rec)
{
    const bool zh = rec->lang == DATA_ZH;
    core_buf *b = &rec->prompt;
    bool ok = core_buf_printf(b, "%s", zh ? PICK(rng, prefix_zh) : PICK(rng, prefix_en));
    if (!zh) ok = ok && core_buf_append(b, " ", 1);
    const char *sep = zh ? PICK(rng, sep_zh) : PICK(rng, sep_en);
    for (int i = 0; i < rec->n_readings && ok; i++) {
        const data_sensor_reading *r = &rec->readings[i];
        const int variant = (int)core_rng_below(rng, 2);
        if (i) ok = core_buf_printf(b, "%s", sep);
        ok = ok && put_reading(b, rec->lang, r,
                               zh ? names_zh[r->sensor][variant] : names_en[r->sensor][variant]);
    }
    return ok;
}

/* "Status: warning. Out of range: temperature 38.2°C (above 35°C). Action: check cooling and
 * ventilation." / "状态:警告。超出范围:温度38.2℃(高于35℃)。建议:检查冷却和通风。" */
static bool write_answer(data_record *rec)
{
    const bool zh = rec->lang == DATA_ZH;
    core_buf *b = &rec->answer;
    bool ok = core_buf_printf(b, zh ? "状态:%s。" : "Status: %s.",
                              data_level_label(rec->task, rec->lang, rec->status));
    if (rec->status == DATA_NORMAL)
        return ok && core_buf_printf(b, "%s",
                                     zh ? "所有读数均在正常范围内。建议:无需处理。"
                                        : " All readings are within range. Action: none "
                                          "needed.");
    ok = ok && core_buf_printf(b, "%s", zh ? "超出范围:" : " Out of range: ");
    bool first = true;
    for (int i = 0; i < rec->n_readings && ok; i++) {
        const data_sensor_reading *r = &rec->readings[i];
        if (r->level == DATA_NORMAL) continue;
        char lim[32];
        limit_text(rec->task, rec->lang, r, lim, sizeof lim);
        if (!first) ok = core_buf_printf(b, "%s", zh ? "，" : ", ");
        first = false;
        ok = ok &&
             put_reading(b, rec->lang, r, zh ? names_zh[r->sensor][0] : names_en[r->sensor][0]);
        ok = ok && (zh ? core_buf_printf(b, "(%s%s)", r->direction < 0 ? "低于" : "高于", lim)
                       : core_buf_printf(b, " (%s %s)", r->direction < 0 ? "below" : "above", lim));
    }
    ok = ok && core_buf_printf(b, "%s", zh ? "。建议:" : ". Action: ");
    if (rec->status == DATA_CRITICAL)
        ok = ok && core_buf_printf(b, "%s", zh ? "立即停机并" : "stop the equipment and ");
    first = true;
    for (int i = 0; i < rec->n_readings && ok; i++) {
        const data_sensor_reading *r = &rec->readings[i];
        if (r->level == DATA_NORMAL) continue;
        const int up = r->direction > 0;
        if (!first) ok = core_buf_printf(b, "%s", zh ? "；" : "; ");
        first = false;
        ok = ok &&
             core_buf_printf(b, "%s", zh ? actions_zh[r->sensor][up] : actions_en[r->sensor][up]);
    }
    return ok && core_buf_printf(b, "%s", zh ? "。" : ".");
}

mica_status data_sensors_record(const data_sensors_opts *opts, uint64_t index, data_record *r,
                                mica_err *err)
{
    memset(r, 0, sizeof *r);
    core_buf_init(&r->prompt, 4096);
    core_buf_init(&r->answer, 4096);
    if (!opts->zh && !opts->en) return core_fail(err, MICA_EINVAL, "no language chosen");
    core_rng rng;
    core_rng_seed(&rng, opts->seed * 0x9E3779B97F4A7C15ull + index);
    r->task = opts->task;
    r->lang = opts->zh && opts->en ? (data_lang)core_rng_below(&rng, 2)
              : opts->zh           ? DATA_ZH
                                   : DATA_EN;
    /* A random subset of 1-4 sensors in random order. */
    int order[DATA_N_SENSORS];
    for (int i = 0; i < DATA_N_SENSORS; i++) order[i] = i;
    for (int i = DATA_N_SENSORS - 1; i > 0; i--) {
        const int j = (int)core_rng_below(&rng, (uint64_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    r->n_readings = 1 + (int)core_rng_below(&rng, 4);
    r->status = DATA_NORMAL;
    for (int i = 0; i < r->n_readings; i++) {
        make_reading(&rng, r->task, r->lang, (data_sensor)order[i], &r->readings[i]);
        if (r->readings[i].level > r->status) r->status = r->readings[i].level;
    }
    if (!write_prompt(&rng, r) || !write_answer(r)) {
        data_record_free(r);
        return core_fail(err, MICA_ENOMEM, "out of memory");
    }
    return MICA_OK;
}

void data_record_free(data_record *r)
{
    core_buf_free(&r->prompt);
    core_buf_free(&r->answer);
}

int data_answer_level(data_task task, const char *text, size_t len)
{
    static const char *const heads[] = {"Status: ", "状态:"};
    for (size_t h = 0; h < 2; h++) {
        const size_t hl = strlen(heads[h]);
        for (size_t i = 0; i + hl <= len; i++) {
            if (memcmp(text + i, heads[h], hl)) continue;
            const char *rest = text + i + hl;
            const size_t left = len - i - hl;
            for (int lang = 0; lang < 2; lang++)
                for (int lv = 0; lv < 3; lv++) {
                    const char *l = labels[task][lang][lv];
                    const size_t ll = strlen(l);
                    if (left >= ll && !memcmp(rest, l, ll)) return lv;
                }
            return -1;
        }
    }
    return -1;
}

mica_status data_record_jsonl(const data_record *r, core_buf *out)
{
    static const char *const tasks[] = {"base", "site-b"};
    const bool ok = core_buf_printf(out, "{\"prompt\":") &&
                    core_buf_append_json_str(out, r->prompt.data, r->prompt.len) &&
                    core_buf_printf(out, ",\"completion\":") &&
                    core_buf_append_json_str(out, r->answer.data, r->answer.len) &&
                    core_buf_printf(out, ",\"label\":\"%s\",\"lang\":\"%s\",\"task\":\"%s\"}\n",
                                    data_level_label(r->task, DATA_EN, r->status),
                                    r->lang == DATA_ZH ? "zh" : "en", tasks[r->task]);
    return ok ? MICA_OK : MICA_ENOMEM;
}
