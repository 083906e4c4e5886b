/*
 * LD_PRELOAD shim of tests/reliability/test_power_loss.py: a journal of every change a process
 * makes to the files of one folder, so the test can rebuild what a disk held at a power cut.
 *
 * POWERLOSS_DIR      the watched folder (an absolute, resolved path): files directly or deeper in it
 * POWERLOSS_JOURNAL  the append-only journal (outside the watched folder)
 * POWERLOSS_MARK     optional: a file whose writes are copied into the journal as marks (the
 *                    writer's acknowledgements), so marks and file changes share one order
 *
 * Every record starts with: u8 kind, u64 CLOCK_REALTIME ns, i32 fd, then (little-endian)
 *   'O' open      u32 flags, u32 length, path        'C' close
 *   'W' write     i64 offset, u32 length, bytes      'T' truncate / 'X' allocate   i64 size
 *   'S' fsync / fdatasync returned                   'M' mmap  i32 prot, i32 flags, i64 offset, i64 length
 *   'U' unlink    u32 length, path                   'R' rename  u32 length, old, u32 length, new
 *   'L' link      u32 length, old, u32 length, new (a second name for the same file)
 *   'A' mark      u32 length, bytes                  'E' error   u32 length, message
 * One mutex orders all of them: a change is logged before it is made (a cut may then keep a
 * change the kill prevented or cut short, which a cut a moment later would have kept too; the
 * test allows that for the journal's last record only), a sync only once it returned (a sync the
 * kill interrupted never happened). The journal is written with raw system calls, so the shim
 * never sees its own writes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int journal = -1;
static char watched[PATH_MAX];
static size_t watched_len;
static char mark_path[PATH_MAX];
static unsigned char tracked[MAX_FD]; /* 0: not ours, 1: a watched file, 2: the mark file */

static void raw_write_all(const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = syscall(SYS_write, journal, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) abort(); /* a journal that misses records would prove nothing */
        p += n;
        len -= (size_t)n;
    }
}

/* One record in one write(2): header, then up to three pieces. */
static void emit(char kind, int fd, const void *a, size_t alen, const void *b, size_t blen, const void *c,
                 size_t clen) {
    if (journal < 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    int32_t fd32 = fd;
    size_t total = 1 + 8 + 4 + alen + blen + clen;
    char small[512];
    char *buf = total <= sizeof small ? small : malloc(total);
    if (buf == NULL) abort();
    char *p = buf;
    *p++ = kind;
    memcpy(p, &ns, 8), p += 8;
    memcpy(p, &fd32, 4), p += 4;
    if (alen) memcpy(p, a, alen), p += alen;
    if (blen) memcpy(p, b, blen), p += blen;
    if (clen) memcpy(p, c, clen), p += clen;
    raw_write_all(buf, total);
    if (buf != small) free(buf);
}

static void emit_error(const char *message) {
    uint32_t len = (uint32_t)strlen(message);
    emit('E', -1, &len, 4, message, len, NULL, 0);
}

__attribute__((constructor)) static void init(void) {
    const char *dir = getenv("POWERLOSS_DIR");
    const char *path = getenv("POWERLOSS_JOURNAL");
    const char *mark = getenv("POWERLOSS_MARK");
    if (dir == NULL || path == NULL) return;
    watched_len = strlen(dir);
    if (watched_len == 0 || watched_len >= sizeof watched) return;
    memcpy(watched, dir, watched_len + 1);
    if (mark != NULL && strlen(mark) < sizeof mark_path) strcpy(mark_path, mark);
    journal = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (journal < 0) abort();
}

/* The absolute form of ``path`` (relative to ``dirfd``), lexically: SQLite passes full names. */
static int absolute(int dirfd, const char *path, char *out) {
    if (path == NULL) return -1;
    if (path[0] == '/') {
        if (strlen(path) >= PATH_MAX) return -1;
        strcpy(out, path);
        return 0;
    }
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (getcwd(base, sizeof base) == NULL) return -1;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n < 0) return -1;
        base[n] = '\0';
    }
    if (snprintf(out, PATH_MAX, "%s/%s", base, path) >= PATH_MAX) return -1;
    return 0;
}

static int is_watched(const char *abs) {
    return watched_len && strncmp(abs, watched, watched_len) == 0 && abs[watched_len] == '/';
}

static int watched_fd(int fd) { return journal >= 0 && fd >= 0 && fd < MAX_FD && tracked[fd]; }

#define REAL(ret, name, ...)                                                                               \
    static ret (*real_##name)(__VA_ARGS__);                                                                \
    if (real_##name == NULL) real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

/* -- opening and closing -------------------------------------------------------------------- */

static void opened(int dirfd, const char *path, int flags, int fd) {
    char abs[PATH_MAX];
    if (journal < 0 || fd < 0 || absolute(dirfd, path, abs) != 0) return;
    int kind = is_watched(abs) ? 1 : (mark_path[0] && strcmp(abs, mark_path) == 0) ? 2 : 0;
    if (kind == 0) return;
    if (fd >= MAX_FD) {
        emit_error("a watched file got a descriptor above the shim's table");
        return;
    }
    tracked[fd] = (unsigned char)kind;
    if (kind == 1) {
        uint32_t f = (uint32_t)flags, len = (uint32_t)strlen(abs);
        emit('O', fd, &f, 4, &len, 4, abs, len);
    }
}

static mode_t open_mode(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

/* open(2) and its aliases: the file's fd is logged under the lock, so no record can refer to
 * an fd before its 'O' record. O_TRUNC is logged in the flags; the test replays it. */
#define DEFINE_OPEN(name)                                                                                  \
    int name(const char *path, int flags, ...) {                                                           \
        REAL(int, name, const char *, int, ...);                                                           \
        va_list ap;                                                                                        \
        va_start(ap, flags);                                                                               \
        mode_t mode = open_mode(flags, ap);                                                                \
        va_end(ap);                                                                                        \
        pthread_mutex_lock(&lock);                                                                         \
        int fd = real_##name(path, flags, mode);                                                           \
        int saved = errno;                                                                                 \
        opened(AT_FDCWD, path, flags, fd);                                                                 \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return fd;                                                                                         \
    }
DEFINE_OPEN(open)
DEFINE_OPEN(open64)

#define DEFINE_OPENAT(name)                                                                                \
    int name(int dirfd, const char *path, int flags, ...) {                                                \
        REAL(int, name, int, const char *, int, ...);                                                      \
        va_list ap;                                                                                        \
        va_start(ap, flags);                                                                               \
        mode_t mode = open_mode(flags, ap);                                                                \
        va_end(ap);                                                                                        \
        pthread_mutex_lock(&lock);                                                                         \
        int fd = real_##name(dirfd, path, flags, mode);                                                    \
        int saved = errno;                                                                                 \
        opened(dirfd, path, flags, fd);                                                                    \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return fd;                                                                                         \
    }
DEFINE_OPENAT(openat)
DEFINE_OPENAT(openat64)

/* The _FORTIFY_SOURCE entry points (no mode argument). */
#define DEFINE_OPEN_2(name)                                                                                \
    int name(const char *path, int flags) {                                                                \
        REAL(int, name, const char *, int);                                                                \
        pthread_mutex_lock(&lock);                                                                         \
        int fd = real_##name(path, flags);                                                                 \
        int saved = errno;                                                                                 \
        opened(AT_FDCWD, path, flags, fd);                                                                 \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return fd;                                                                                         \
    }
DEFINE_OPEN_2(__open_2)
DEFINE_OPEN_2(__open64_2)

#define DEFINE_CREAT(name)                                                                                 \
    int name(const char *path, mode_t mode) {                                                              \
        REAL(int, name, const char *, mode_t);                                                             \
        pthread_mutex_lock(&lock);                                                                         \
        int fd = real_##name(path, mode);                                                                  \
        int saved = errno;                                                                                 \
        opened(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, fd);                                          \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return fd;                                                                                         \
    }
DEFINE_CREAT(creat)
DEFINE_CREAT(creat64)

int close(int fd) {
    REAL(int, close, int);
    pthread_mutex_lock(&lock);
    if (watched_fd(fd)) {
        if (tracked[fd] == 1) emit('C', fd, NULL, 0, NULL, 0, NULL, 0);
        tracked[fd] = 0;
    }
    int rc = real_close(fd);
    int saved = errno;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

/* dup would give a watched file a second, unlogged fd: say so rather than be fooled. */
int dup(int fd) {
    REAL(int, dup, int);
    if (watched_fd(fd)) emit_error("dup of a watched file");
    return real_dup(fd);
}

int dup2(int fd, int to) {
    REAL(int, dup2, int, int);
    if (watched_fd(fd) || watched_fd(to)) emit_error("dup2 of a watched file");
    return real_dup2(fd, to);
}

/* -- changes ---------------------------------------------------------------------------------- */

static void log_write(int fd, off_t offset, const void *buf, size_t len) {
    if (tracked[fd] == 2) {
        uint32_t n = (uint32_t)len;
        emit('A', fd, &n, 4, buf, len, NULL, 0);
        return;
    }
    int64_t off = offset;
    uint32_t n = (uint32_t)len;
    char head[12];
    memcpy(head, &off, 8);
    memcpy(head + 8, &n, 4);
    emit('W', fd, head, 12, buf, len, NULL, 0);
}

#define DEFINE_PWRITE(name, off_type)                                                                      \
    ssize_t name(int fd, const void *buf, size_t len, off_type offset) {                                   \
        REAL(ssize_t, name, int, const void *, size_t, off_type);                                          \
        if (!watched_fd(fd)) return real_##name(fd, buf, len, offset);                                     \
        pthread_mutex_lock(&lock);                                                                         \
        log_write(fd, (off_t)offset, buf, len);                                                            \
        ssize_t n = real_##name(fd, buf, len, offset);                                                     \
        int saved = errno;                                                                                 \
        if (n >= 0 && (size_t)n != len) emit_error("a short pwrite to a watched file");                    \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return n;                                                                                          \
    }
DEFINE_PWRITE(pwrite, off_t)
DEFINE_PWRITE(pwrite64, off64_t)

ssize_t write(int fd, const void *buf, size_t len) {
    REAL(ssize_t, write, int, const void *, size_t);
    if (!watched_fd(fd)) return real_write(fd, buf, len);
    pthread_mutex_lock(&lock);
    off_t offset = lseek(fd, 0, SEEK_CUR);
    if (tracked[fd] == 1 && (fcntl(fd, F_GETFL) & O_APPEND)) offset = lseek(fd, 0, SEEK_END);
    log_write(fd, offset, buf, len);
    ssize_t n = real_write(fd, buf, len);
    int saved = errno;
    if (n >= 0 && (size_t)n != len && tracked[fd] == 1) emit_error("a short write to a watched file");
    pthread_mutex_unlock(&lock);
    errno = saved;
    return n;
}

/* Vectored writes: logged as one write of the gathered bytes. */
static char *gather(const struct iovec *iov, int count, size_t *len) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    char *buf = malloc(total ? total : 1);
    if (buf == NULL) abort();
    size_t at = 0;
    for (int i = 0; i < count; i++) memcpy(buf + at, iov[i].iov_base, iov[i].iov_len), at += iov[i].iov_len;
    *len = total;
    return buf;
}

#define DEFINE_PWRITEV(name, off_type)                                                                     \
    ssize_t name(int fd, const struct iovec *iov, int count, off_type offset) {                            \
        REAL(ssize_t, name, int, const struct iovec *, int, off_type);                                     \
        if (!watched_fd(fd)) return real_##name(fd, iov, count, offset);                                   \
        pthread_mutex_lock(&lock);                                                                         \
        size_t len;                                                                                        \
        char *buf = gather(iov, count, &len);                                                              \
        log_write(fd, (off_t)offset, buf, len);                                                            \
        free(buf);                                                                                         \
        ssize_t n = real_##name(fd, iov, count, offset);                                                   \
        int saved = errno;                                                                                 \
        if (n >= 0 && (size_t)n != len) emit_error("a short pwritev to a watched file");                   \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return n;                                                                                          \
    }
DEFINE_PWRITEV(pwritev, off_t)
DEFINE_PWRITEV(pwritev64, off64_t)

ssize_t writev(int fd, const struct iovec *iov, int count) {
    REAL(ssize_t, writev, int, const struct iovec *, int);
    if (!watched_fd(fd)) return real_writev(fd, iov, count);
    pthread_mutex_lock(&lock);
    size_t len;
    char *buf = gather(iov, count, &len);
    off_t offset = lseek(fd, 0, SEEK_CUR);
    if (tracked[fd] == 1 && (fcntl(fd, F_GETFL) & O_APPEND)) offset = lseek(fd, 0, SEEK_END);
    log_write(fd, offset, buf, len);
    free(buf);
    ssize_t n = real_writev(fd, iov, count);
    int saved = errno;
    if (n >= 0 && (size_t)n != len && tracked[fd] == 1) emit_error("a short writev to a watched file");
    pthread_mutex_unlock(&lock);
    errno = saved;
    return n;
}

#define DEFINE_SIZE_CHANGE(name, off_type, kind)                                                           \
    int name(int fd, off_type size) {                                                                      \
        REAL(int, name, int, off_type);                                                                    \
        if (!watched_fd(fd) || tracked[fd] != 1) return real_##name(fd, size);                             \
        pthread_mutex_lock(&lock);                                                                         \
        int64_t s = size;                                                                                  \
        emit(kind, fd, &s, 8, NULL, 0, NULL, 0);                                                           \
        int rc = real_##name(fd, size);                                                                    \
        int saved = errno;                                                                                 \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return rc;                                                                                         \
    }
DEFINE_SIZE_CHANGE(ftruncate, off_t, 'T')
DEFINE_SIZE_CHANGE(ftruncate64, off64_t, 'T')

/* Allocation never shrinks a file: logged as its end ('X'); the test keeps the larger size. */
#define DEFINE_FALLOCATE(name, off_type)                                                                   \
    int name(int fd, int mode, off_type offset, off_type len) {                                            \
        REAL(int, name, int, int, off_type, off_type);                                                     \
        if (!watched_fd(fd) || tracked[fd] != 1) return real_##name(fd, mode, offset, len);                \
        pthread_mutex_lock(&lock);                                                                         \
        int64_t end = (int64_t)offset + (int64_t)len;                                                      \
        if (mode & 1 /* FALLOC_FL_KEEP_SIZE */) end = 0;                                                   \
        if (mode & ~1) emit_error(#name " with a mode that punches or zeroes");                            \
        emit('X', fd, &end, 8, NULL, 0, NULL, 0);                                                          \
        int rc = real_##name(fd, mode, offset, len);                                                       \
        int saved = errno;                                                                                 \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return rc;                                                                                         \
    }
DEFINE_FALLOCATE(fallocate, off_t)
DEFINE_FALLOCATE(fallocate64, off64_t)

#define DEFINE_POSIX_FALLOCATE(name, off_type)                                                             \
    int name(int fd, off_type offset, off_type len) {                                                      \
        REAL(int, name, int, off_type, off_type);                                                          \
        if (!watched_fd(fd) || tracked[fd] != 1) return real_##name(fd, offset, len);                      \
        pthread_mutex_lock(&lock);                                                                         \
        int64_t end = (int64_t)offset + (int64_t)len;                                                      \
        emit('X', fd, &end, 8, NULL, 0, NULL, 0);                                                          \
        int rc = real_##name(fd, offset, len);                                                             \
        pthread_mutex_unlock(&lock);                                                                       \
        return rc;                                                                                         \
    }
DEFINE_POSIX_FALLOCATE(posix_fallocate, off_t)
DEFINE_POSIX_FALLOCATE(posix_fallocate64, off64_t)

/* -- syncs: logged only once they returned ------------------------------------------------------ */

#define DEFINE_SYNC(name)                                                                                  \
    int name(int fd) {                                                                                     \
        REAL(int, name, int);                                                                              \
        if (!watched_fd(fd) || tracked[fd] != 1) return real_##name(fd);                                   \
        pthread_mutex_lock(&lock);                                                                         \
        int rc = real_##name(fd);                                                                          \
        int saved = errno;                                                                                 \
        if (rc == 0) emit('S', fd, NULL, 0, NULL, 0, NULL, 0);                                             \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return rc;                                                                                         \
    }
DEFINE_SYNC(fsync)
DEFINE_SYNC(fdatasync)

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    REAL(int, sync_file_range, int, off64_t, off64_t, unsigned int);
    if (watched_fd(fd)) emit_error("sync_file_range of a watched file (not modelled)");
    return real_sync_file_range(fd, offset, nbytes, flags);
}

/* -- names: directory entries count as persisted the moment they change ---------------------- */

int unlink(const char *path) {
    REAL(int, unlink, const char *);
    char abs[PATH_MAX];
    pthread_mutex_lock(&lock);
    int rc = real_unlink(path);
    int saved = errno;
    if (rc == 0 && journal >= 0 && absolute(AT_FDCWD, path, abs) == 0 && is_watched(abs)) {
        uint32_t len = (uint32_t)strlen(abs);
        emit('U', -1, &len, 4, abs, len, NULL, 0);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

int unlinkat(int dirfd, const char *path, int flags) {
    REAL(int, unlinkat, int, const char *, int);
    char abs[PATH_MAX];
    pthread_mutex_lock(&lock);
    int rc = real_unlinkat(dirfd, path, flags);
    int saved = errno;
    if (rc == 0 && journal >= 0 && absolute(dirfd, path, abs) == 0 && is_watched(abs)) {
        uint32_t len = (uint32_t)strlen(abs);
        emit('U', -1, &len, 4, abs, len, NULL, 0);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

static void named(char kind, int olddir, const char *old, int newdir, const char *new) {
    char a[PATH_MAX], b[PATH_MAX];
    if (journal < 0 || absolute(olddir, old, a) != 0 || absolute(newdir, new, b) != 0) return;
    if (!is_watched(a) && !is_watched(b)) return;
    uint32_t alen = (uint32_t)strlen(a), blen = (uint32_t)strlen(b);
    char head[4 + PATH_MAX];
    memcpy(head, &alen, 4);
    memcpy(head + 4, a, alen);
    emit(kind, -1, head, 4 + alen, &blen, 4, b, blen);
}

static void renamed(int olddir, const char *old, int newdir, const char *new) { named('R', olddir, old, newdir, new); }

int link(const char *old, const char *new) {
    REAL(int, link, const char *, const char *);
    pthread_mutex_lock(&lock);
    int rc = real_link(old, new);
    int saved = errno;
    if (rc == 0) named('L', AT_FDCWD, old, AT_FDCWD, new);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

int linkat(int olddir, const char *old, int newdir, const char *new, int flags) {
    REAL(int, linkat, int, const char *, int, const char *, int);
    pthread_mutex_lock(&lock);
    int rc = real_linkat(olddir, old, newdir, new, flags);
    int saved = errno;
    if (rc == 0) named('L', olddir, old, newdir, new);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

int rename(const char *old, const char *new) {
    REAL(int, rename, const char *, const char *);
    pthread_mutex_lock(&lock);
    int rc = real_rename(old, new);
    int saved = errno;
    if (rc == 0) renamed(AT_FDCWD, old, AT_FDCWD, new);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

int renameat(int olddir, const char *old, int newdir, const char *new) {
    REAL(int, renameat, int, const char *, int, const char *);
    pthread_mutex_lock(&lock);
    int rc = real_renameat(olddir, old, newdir, new);
    int saved = errno;
    if (rc == 0) renamed(olddir, old, newdir, new);
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

/* -- mappings: SQLite maps the database for reads; a writable shared map would bypass the journal */

#define DEFINE_MMAP(name, off_type)                                                                        \
    void *name(void *addr, size_t len, int prot, int flags, int fd, off_type offset) {                     \
        REAL(void *, name, void *, size_t, int, int, int, off_type);                                       \
        if (!watched_fd(fd) || tracked[fd] != 1) return real_##name(addr, len, prot, flags, fd, offset);   \
        pthread_mutex_lock(&lock);                                                                         \
        void *p = real_##name(addr, len, prot, flags, fd, offset);                                         \
        int saved = errno;                                                                                 \
        int32_t pf[2] = {prot, flags};                                                                     \
        int64_t ol[2] = {(int64_t)offset, (int64_t)len};                                                   \
        if (p != MAP_FAILED) emit('M', fd, pf, 8, ol, 16, NULL, 0);                                        \
        pthread_mutex_unlock(&lock);                                                                       \
        errno = saved;                                                                                     \
        return p;                                                                                          \
    }
DEFINE_MMAP(mmap, off_t)
DEFINE_MMAP(mmap64, off64_t)
