/*
 * log.h - leveled logging to stderr. Thread-safe (one write(2) per line).
 */
#ifndef RV_LOG_H
#define RV_LOG_H

enum rv_log_level { RV_LOG_ERROR = 0, RV_LOG_WARN, RV_LOG_INFO, RV_LOG_DEBUG };

extern int rv_log_level;

/* Parse "error|warn|info|debug"; returns the level or -1. */
int rv_log_parse_level(const char *s);

/* printf-style line with timestamp and level; a trailing newline is added. */
void rv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define rv_log_error(...) rv_log(RV_LOG_ERROR, __VA_ARGS__)
#define rv_log_warn(...)  do { if (rv_log_level >= RV_LOG_WARN) rv_log(RV_LOG_WARN, __VA_ARGS__); } while (0)
#define rv_log_info(...)  do { if (rv_log_level >= RV_LOG_INFO) rv_log(RV_LOG_INFO, __VA_ARGS__); } while (0)
#define rv_log_debug(...) do { if (rv_log_level >= RV_LOG_DEBUG) rv_log(RV_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
