/*
 * Test helpers: real redis-server processes (masters, replicas, sentinels) on free 127.0.0.1
 * ports, each in its own temporary directory, without persistence. Header-only.
 */
#pragma once

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <hiredis/hiredis.h>

typedef struct {
  GPid pid; /* 0 once stopped */
  int port;
  char *dir;
  gboolean sentinel;
} TrServer;

static inline gboolean
tr_have_redis (void)
{
  g_autofree char *path = g_find_program_in_path ("redis-server");

  return path != NULL;
}

/* A port nobody listens on right now (the kernel's pick for an ephemeral bind). */
static inline int
tr_free_port (void)
{
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof addr;
  int fd = socket (AF_INET, SOCK_STREAM, 0);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (bind (fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *)&addr, &len), ==, 0);
  close (fd);
  return ntohs (addr.sin_port);
}

/* A short blocking connection for the test's own checks; NULL if nothing answers. */
static inline redisContext *
tr_connect (int port)
{
  struct timeval timeout = { .tv_sec = 1 };
  redisContext *c = redisConnectWithTimeout ("127.0.0.1", port, timeout);

  if (c == NULL || c->err != 0) {
    if (c != NULL)
      redisFree (c);
    return NULL;
  }
  redisSetTimeout (c, timeout);
  return c;
}

/* Runs one command; returns the reply (NULL if the server is gone). */
G_GNUC_PRINTF (2, 3)
static inline redisReply *
tr_command (int port, const char *format, ...)
{
  redisContext *c = tr_connect (port);
  redisReply *reply = NULL;
  va_list args;

  if (c == NULL)
    return NULL;
  va_start (args, format);
  reply = redisvCommand (c, format, args);
  va_end (args);
  redisFree (c);
  return reply;
}

static void
tr_child_setup (gpointer data)
{
  /* Never outlive a test that aborts. */
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

static inline void
tr_wait_ping (TrServer *s)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  for (;;) {
    redisReply *reply = tr_command (s->port, "PING");
    gboolean ok = reply != NULL && reply->type == REDIS_REPLY_STATUS;

    if (reply != NULL)
      freeReplyObject (reply);
    if (ok)
      return;
    if (g_get_monotonic_time () > deadline)
      g_error ("redis-server on port %d did not start (see %s)", s->port, s->dir);
    g_usleep (10 * 1000);
  }
}

/* Starts (or restarts, same port and directory) a server; @extra: more "name value" args. */
static inline void
tr_server_start (TrServer *s, const char *const *extra)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) error = NULL;

  if (s->dir == NULL)
    s->dir = g_dir_make_tmp ("sk-redis-XXXXXX", &error);
  g_assert_no_error (error);
  if (s->port == 0)
    s->port = tr_free_port ();

  g_ptr_array_add (argv, g_strdup ("redis-server"));
  if (s->sentinel) {
    g_autofree char *conf = g_build_filename (s->dir, "sentinel.conf", NULL);

    g_ptr_array_add (argv, g_strdup (conf));
    g_ptr_array_add (argv, g_strdup ("--sentinel"));
  }
  g_ptr_array_add (argv, g_strdup ("--port"));
  g_ptr_array_add (argv, g_strdup_printf ("%d", s->port));
  g_ptr_array_add (argv, g_strdup ("--bind"));
  g_ptr_array_add (argv, g_strdup ("127.0.0.1"));
  g_ptr_array_add (argv, g_strdup ("--dir"));
  g_ptr_array_add (argv, g_strdup (s->dir));
  g_ptr_array_add (argv, g_strdup ("--logfile"));
  g_ptr_array_add (argv, g_build_filename (s->dir, "redis.log", NULL));
  if (!s->sentinel) {
    g_ptr_array_add (argv, g_strdup ("--save"));
    g_ptr_array_add (argv, g_strdup (""));
    g_ptr_array_add (argv, g_strdup ("--appendonly"));
    g_ptr_array_add (argv, g_strdup ("no"));
  }
  for (guint i = 0; extra != NULL && extra[i] != NULL; i++)
    g_ptr_array_add (argv, g_strdup (extra[i]));
  g_ptr_array_add (argv, NULL);

  g_spawn_async (s->dir, (char **)argv->pdata, NULL,
                 G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                 tr_child_setup, NULL, &s->pid, &error);
  g_assert_no_error (error);
  tr_wait_ping (s);
}

/* A sentinel watching @master_port as "mymaster", quick to declare it down. */
static inline void
tr_sentinel_start (TrServer *s, int master_port, guint quorum)
{
  g_autofree char *conf = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;

  s->sentinel = TRUE;
  s->dir = g_dir_make_tmp ("sk-sentinel-XXXXXX", &error);
  g_assert_no_error (error);
  conf = g_build_filename (s->dir, "sentinel.conf", NULL);
  text = g_strdup_printf ("sentinel monitor mymaster 127.0.0.1 %d %u\n"
                          "sentinel down-after-milliseconds mymaster 500\n"
                          "sentinel failover-timeout mymaster 3000\n"
                          "sentinel parallel-syncs mymaster 1\n",
                          master_port, quorum);
  g_assert_true (g_file_set_contents (conf, text, -1, &error));
  tr_server_start (s, NULL);
}

static inline void
tr_server_signal (TrServer *s, int sig)
{
  if (s->pid != 0)
    kill (s->pid, sig);
}

/* Stops the process (SIGKILL: like a crash) and reaps it; keeps port and directory. */
static inline void
tr_server_kill (TrServer *s)
{
  if (s->pid == 0)
    return;
  kill (s->pid, SIGKILL);
  waitpid (s->pid, NULL, 0);
  g_spawn_close_pid (s->pid);
  s->pid = 0;
}

static inline void
tr_rm_rf (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = g_build_filename (dir, name, NULL);

    g_remove (path);
  }
  g_rmdir (dir);
}

static inline void
tr_server_clear (TrServer *s)
{
  tr_server_kill (s);
  if (s->dir != NULL)
    tr_rm_rf (s->dir);
  g_clear_pointer (&s->dir, g_free);
  s->port = 0;
}

/* Waits until @field of INFO @section (e.g. "master_link_status") reads @value. */
static inline void
tr_wait_info (int port, const char *section, const char *field, const char *value)
{
  g_autofree char *needle = g_strdup_printf ("%s:%s\r\n", field, value);
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  for (;;) {
    redisReply *reply = tr_command (port, "INFO %s", section);
    gboolean ok
        = reply != NULL && reply->type == REDIS_REPLY_STRING && strstr (reply->str, needle) != NULL;

    if (reply != NULL)
      freeReplyObject (reply);
    if (ok)
      return;
    if (g_get_monotonic_time () > deadline)
      g_error ("port %d: INFO %s never showed %s:%s", port, section, field, value);
    g_usleep (20 * 1000);
  }
}
