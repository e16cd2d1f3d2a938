// Temporary files and scratch folders removed when the process is interrupted (SIGINT, SIGTERM, SIGHUP): the
// handler only calls async-signal-safe functions (unlink, rmdir, signal, raise) on paths copied into a fixed table
// when they were registered, then re-raises the signal with its default action, so the exit status still says
// "killed by signal".
#define _GNU_SOURCE
#include "include/tensorio_kernels.h"
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WM_MAX_TEMPORARY 256
#define WM_MAX_PATH 4096

static char wm_paths[WM_MAX_TEMPORARY][WM_MAX_PATH];
static volatile sig_atomic_t wm_used[WM_MAX_TEMPORARY];
static pthread_mutex_t wm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t wm_once = PTHREAD_ONCE_INIT;

static void wm_cleanup_handler(int sig) {
    // Files first, then the folders they were in.
    for (int i = 0; i < WM_MAX_TEMPORARY; i++) {
        if (wm_used[i]) unlink(wm_paths[i]);
    }
    // Innermost folders were usually registered later: twice from the end, so nested ones go first.
    for (int pass = 0; pass < 2; pass++) {
        for (int i = WM_MAX_TEMPORARY - 1; i >= 0; i--) {
            if (wm_used[i]) rmdir(wm_paths[i]);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void wm_install(void) {
    int signals[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction old;
        if (sigaction(signals[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue; // nohup'd: leave it
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = wm_cleanup_handler;
        sigemptyset(&sa.sa_mask);
        sigaction(signals[i], &sa, NULL);
    }
}

int weightmark_register_temporary(const char *path) {
    pthread_once(&wm_once, wm_install);
    if (strlen(path) >= WM_MAX_PATH) return -1;
    pthread_mutex_lock(&wm_lock);
    int slot = -1;
    for (int i = 0; i < WM_MAX_TEMPORARY; i++) {
        if (!wm_used[i]) { slot = i; break; }
    }
    if (slot >= 0) {
        strcpy(wm_paths[slot], path);
        wm_used[slot] = 1;
    }
    pthread_mutex_unlock(&wm_lock);
    return slot;
}

void weightmark_unregister_temporary(int slot) {
    if (slot < 0 || slot >= WM_MAX_TEMPORARY) return;
    pthread_mutex_lock(&wm_lock);
    wm_used[slot] = 0;
    pthread_mutex_unlock(&wm_lock);
}
