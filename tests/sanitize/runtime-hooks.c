/* Linked into every binary that tests/sanitize.sh builds (server and test binaries).
 *
 * 1. Sanitizer options compiled in: the tests start the server with a cleared environment
 *    (tests/common/mod.rs), so ASAN_OPTIONS & co. would not reach it. The runtimes ask these
 *    functions for their defaults; ASAN_OPTIONS/UBSAN_OPTIONS in the environment still win.
 *    The strings and paths come from tests/sanitize.sh (-D...).
 *
 * 2. UBSan reports into a file. With gcc, -fsanitize=address,undefined links two runtimes,
 *    libasan.so and libubsan.so. libubsan applies its log_path through the exported
 *    __sanitizer_set_report_path, which resolves to libasan's copy (libasan comes first), so its
 *    own reports always go to stderr, and the tests swallow the server's stderr. libubsan calls
 *    __ubsan_on_report() for every error it reports; this one appends the report, with a
 *    symbolized stack, to <log dir>/ubsan.<exe>.<pid>, next to ASan's own report files.
 *
 * The functions must be in the dynamic symbol table to be found (see the
 * --export-dynamic-symbol link arguments in tests/sanitize.sh).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default"), used))

/* LeakSanitizer on exit only when tests/sanitize.sh was asked for it (SANITIZE_LEAKS=1): it
 * creates this file for the run, so the same binaries serve both. A raw syscall, because this
 * runs inside ASan's initialisation, before its interceptors are set up. */
static int leak_check_requested(void) {
  return syscall(SYS_faccessat, AT_FDCWD, SANITIZE_LEAKS_FLAG, F_OK, 0) == 0;
}

EXPORT const char *__asan_default_options(void) {
  return leak_check_requested() ? SANITIZE_ASAN_OPTIONS ":detect_leaks=1"
                                : SANITIZE_ASAN_OPTIONS ":detect_leaks=0";
}
EXPORT const char *__ubsan_default_options(void) { return SANITIZE_UBSAN_OPTIONS; }
EXPORT const char *__lsan_default_options(void) { return SANITIZE_LSAN_OPTIONS; }

/* From libubsan and libasan; weak so that a binary without them still links. */
extern void __ubsan_get_current_report_data(const char **kind, const char **message,
                                            const char **file, unsigned *line, unsigned *col,
                                            char **memory) __attribute__((weak));
extern void __sanitizer_symbolize_pc(void *pc, const char *fmt, char *out, size_t size)
    __attribute__((weak));

EXPORT void __ubsan_on_report(void) {
  if (!__ubsan_get_current_report_data)
    return;
  const char *kind = "?", *message = "?", *file = "?";
  unsigned line = 0, col = 0;
  char *memory = NULL;
  __ubsan_get_current_report_data(&kind, &message, &file, &line, &col, &memory);

  char path[4096];
  snprintf(path, sizeof path, "%s.%s.%d", SANITIZE_UBSAN_FILE, program_invocation_short_name,
           (int)getpid());
  int saved_errno = errno;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    errno = saved_errno;
    return;
  }
  dprintf(fd, "==%d== UndefinedBehaviorSanitizer (%s): %s:%u:%u: runtime error: %s\n",
          (int)getpid(), kind, file, line, col, message);
  /* The stack from the code that triggered it: drop this hook and libubsan's own frames. */
  void *frames[64];
  char where[64][512];
  int n = backtrace(frames, 64), first = 0;
  for (int i = 0; i < n; i++) {
    where[i][0] = 0;
    if (__sanitizer_symbolize_pc)
      __sanitizer_symbolize_pc(frames[i], "%p %F %L", where[i], sizeof where[i]);
    else
      snprintf(where[i], sizeof where[i], "%p", frames[i]);
    if (strstr(where[i], " __ubsan_handle_"))
      first = i + 1;
  }
  for (int i = first; i < n; i++)
    dprintf(fd, "    #%d %s\n", i - first, where[i]);
  dprintf(fd, "SUMMARY: UndefinedBehaviorSanitizer: %s %s:%u:%u\n\n", kind, file, line, col);
  close(fd);
  errno = saved_errno;
}
