// Mapped model files that shrink while they are read (a mirror re-synced in place, a copy truncated by another
// process) make the kernel raise SIGBUS on the first access past the new end. Every mapping WeightMark reads is
// registered here; the SIGBUS handler maps a zero page over the faulting page when the address lies in a
// registered mapping, marks that mapping as faulted and returns, so the read finishes (on zeros) and the caller asks
// `weightmark_mapping_faulted` afterwards and reports the file as changed. Faults anywhere else go to the previous
// handler (or the default action). The handler calls only mmap, which Linux implements as a plain system call.
#define _GNU_SOURCE
#include "include/tensorio_kernels.h"
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define WM_MAX_MAPPINGS 4096

static volatile uintptr_t wm_map_start[WM_MAX_MAPPINGS];
static volatile uintptr_t wm_map_end[WM_MAX_MAPPINGS];
static volatile sig_atomic_t wm_map_used[WM_MAX_MAPPINGS];
static volatile sig_atomic_t wm_map_faulted[WM_MAX_MAPPINGS];
static volatile sig_atomic_t wm_fault_total;
static uintptr_t wm_page_size = 4096;
static struct sigaction wm_previous_bus;
static pthread_mutex_t wm_map_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t wm_map_once = PTHREAD_ONCE_INIT;

static void wm_bus_handler(int sig, siginfo_t *info, void *context) {
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < WM_MAX_MAPPINGS; i++) {
        if (!wm_map_used[i] || address < wm_map_start[i] || address >= wm_map_end[i]) continue;
        uintptr_t page = address & ~(wm_page_size - 1);
        void *p = mmap((void *)page, wm_page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED) break;
        wm_map_faulted[i] = 1;
        wm_fault_total += 1;
        return; // the faulting read is retried and now sees zeros
    }
    // Not a registered mapping: what would have happened without us.
    if ((wm_previous_bus.sa_flags & SA_SIGINFO) && wm_previous_bus.sa_sigaction) {
        wm_previous_bus.sa_sigaction(sig, info, context);
        return;
    }
    if (wm_previous_bus.sa_handler != SIG_DFL && wm_previous_bus.sa_handler != SIG_IGN && wm_previous_bus.sa_handler) {
        wm_previous_bus.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

static void wm_map_install(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) wm_page_size = (uintptr_t)page;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = wm_bus_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &wm_previous_bus);
}

int weightmark_register_mapping(const void *base, size_t length) {
    pthread_once(&wm_map_once, wm_map_install);
    if (!base || length == 0) return -1;
    pthread_mutex_lock(&wm_map_lock);
    int slot = -1;
    for (int i = 0; i < WM_MAX_MAPPINGS; i++) {
        if (!wm_map_used[i]) { slot = i; break; }
    }
    if (slot >= 0) {
        wm_map_start[slot] = (uintptr_t)base;
        // The whole last page: a file's tail shares it with bytes past the end.
        wm_map_end[slot] = ((uintptr_t)base + length + wm_page_size - 1) & ~(wm_page_size - 1);
        wm_map_faulted[slot] = 0;
        wm_map_used[slot] = 1;
    }
    pthread_mutex_unlock(&wm_map_lock);
    return slot;
}

void weightmark_unregister_mapping(int slot) {
    if (slot < 0 || slot >= WM_MAX_MAPPINGS) return;
    pthread_mutex_lock(&wm_map_lock);
    wm_map_used[slot] = 0;
    pthread_mutex_unlock(&wm_map_lock);
}

int weightmark_mapping_faulted(int slot) {
    if (slot < 0 || slot >= WM_MAX_MAPPINGS) return 0;
    return wm_map_faulted[slot] != 0;
}

long weightmark_mapping_fault_total(void) { return (long)wm_fault_total; }

// A crash (a bug) must never hang a batch run: Swift's backtracer symbolicates in a helper process, which on a large
// binary took minutes. Unless the user asked for the backtracer (SWIFT_BACKTRACE set), fatal signals print one line
// and end the process at once with the same signal.
static void wm_crash_handler(int sig) {
    static const char head[] = "weightmark: crashed with signal ";
    static const char tail[] = " (a bug; please report it with the command line). Run with SWIFT_BACKTRACE=enable=yes for a backtrace.\n";
    char digits[4];
    int n = 0, s = sig;
    do { digits[n++] = (char)('0' + s % 10); s /= 10; } while (s > 0 && n < 3);
    ssize_t ignored = write(2, head, sizeof head - 1);
    while (n > 0) ignored = write(2, &digits[--n], 1);
    ignored = write(2, tail, sizeof tail - 1);
    (void)ignored;
    signal(sig, SIG_DFL);
    raise(sig);
}

void weightmark_install_crash_handler(void) {
    int signals[] = {SIGSEGV, SIGILL, SIGTRAP, SIGFPE, SIGABRT, SIGBUS};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = wm_crash_handler;
        sa.sa_flags = SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(signals[i], &sa, NULL);
    }
}
