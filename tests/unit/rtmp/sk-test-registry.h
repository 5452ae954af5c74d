/*
 * A tiny ingress registry for the RTMP server tests: it implements the handful of
 * sk_ingress_* functions the server calls and records what it sees.
 * Keys starting with "good" are accepted; "busy" → CONFLICT, "full" → LIMIT,
 * "drain" → UNAVAILABLE, anything else → NOT_FOUND. Keys starting with "late" are NOT_FOUND
 * until a refresh (sk_ingress_registry_refresh, answered 10 ms later) has read "the store".
 */
#pragma once

#include "common/sk-common.h"
#include "ingress/sk-ingress.h"

typedef struct {
  char *key;
  char *remote;
  guint n_audio, n_video, n_meta;
  guint32 first_video_ts, last_video_ts, last_audio_ts;
  gboolean ts_went_back;    /* a video or audio timestamp decreased */
  gboolean video_seq_first; /* first video tag was an AVC sequence header */
  gboolean meta_is_onmetadata;
  char *end_reason; /* set by sk_ingress_session_end */
  gboolean ended;
} SkTestSessionLog;

struct _SkIngressRegistry {
  GPtrArray *logs; /* SkTestSessionLog, one per started session */
  guint n_refused;
  guint n_live;
  SkIngressSession *live; /* the last started session, for sk_test_registry_close */
  guint n_refreshes;      /* asked for */
  guint n_refreshed;      /* answered */
  guint refresh_source;
  SkIngressRefreshFunc refresh_func;
  gpointer refresh_data;
};

SkIngressRegistry *sk_test_registry_new (void);
void sk_test_registry_destroy (SkIngressRegistry *self);
SkTestSessionLog *sk_test_registry_last (SkIngressRegistry *self);
/* Like the real registry's close path: calls the transport's close func and ends the session. */
void sk_test_registry_close_live (SkIngressRegistry *self, const char *reason);
