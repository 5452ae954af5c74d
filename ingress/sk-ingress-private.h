/* streamkeeper: what the ingress registry shares with its HTTP API (sk-ingress-api.c). */
#pragma once

#include "ingress/sk-ingress.h"
#include "pipelines/sk-pipeline.h"

G_BEGIN_DECLS

/* Limits the API enforces on records. */
#define SK_INGRESS_MAX_TEXT 256 /* name, participant identity/name, in bytes */
#define SK_INGRESS_MAX_ROOM 128

/* LiveKit's endpoint states. */
#define SK_INGRESS_INACTIVE "ENDPOINT_INACTIVE"
#define SK_INGRESS_BUFFERING "ENDPOINT_BUFFERING"
#define SK_INGRESS_PUBLISHING "ENDPOINT_PUBLISHING"
#define SK_INGRESS_ERROR "ENDPOINT_ERROR"
#define SK_INGRESS_COMPLETE "ENDPOINT_COMPLETE"

typedef struct {
  char *ingress_id;
  char *stream_key;
  char *key_hash; /* sk_sha256_hex (stream_key): the registry's index */
  char *url;
  SkInputType input_type;
  char *name;
  char *room_name;
  char *participant_identity;
  char *participant_name;
  SkTranscodeMode transcode;
  gboolean enabled;
  gint64 created_at_ms;

  /* state */
  const char *status; /* one of the SK_INGRESS_* strings */
  char *error;
  gint64 started_at_ms, ended_at_ms;
  SkInputInfo input;
  char *node;
  guint64 node_incarnation; /* of @node when the session started: stale once it is retired */
  char *participant_sid;

  SkIngressSession *session; /* the live session, if any */
  /* A store read that began before our last write may carry the state it replaced: such a
   * read is not news. Writes still under way, and the first read that began after them. */
  guint writes_in_flight;
  guint fresh_reads_from; /* lists_started numbering */
} SkIngressRecord;

struct _SkIngressRegistry {
  const SkConfig *config;
  SkStore *store;
  SkRoomManager *rooms;
  SkWebhooks *webhooks;

  GHashTable *records; /* ingress_id → SkIngressRecord (owned) */
  GHashTable *by_key;  /* key_hash → SkIngressRecord */
  guint n_live;
  gboolean accepting;
  GList *closing; /* sessions ended by the registry whose close func has not run yet */
  GCancellable *cancellable;
  guint refresh_id; /* periodic re-read of the records other nodes wrote */
  gboolean refresh_in_flight;
  guint lists_started; /* store reads of the records: started, and the newest one answered */
  guint lists_done;
  GList *refresh_waiters; /* RefreshWaiter*: front ends waiting for a fresh read */
  guint next_waiter_id;
  GHashTable *unsaved; /* ingress ids whose last store write failed: written again */
  /* ingress id → the first store read that cannot hold the deleted record any more
   * (lists_started numbering; above any such number while the removal is under way or is
   * to be tried again) */
  GHashTable *deleted;
};

const char *sk_input_type_to_string (SkInputType type);
gboolean sk_input_type_from_string (const char *s, SkInputType *out);

/* A new record with a fresh id, stream key and URL, ENDPOINT_INACTIVE; not yet registered. */
SkIngressRecord *sk_ingress_record_new (SkIngressRegistry *self, SkInputType type);
void sk_ingress_record_free (SkIngressRecord *rec);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkIngressRecord, sk_ingress_record_free)

/* @with_key: include stream_key (API answers yes, webhooks no). */
JsonNode *sk_ingress_record_to_json (const SkIngressRecord *rec, gboolean with_key);

void sk_ingress_registry_insert (SkIngressRegistry *self, SkIngressRecord *rec);
SkIngressRecord *sk_ingress_registry_lookup (SkIngressRegistry *self, const char *ingress_id);
/* Records sorted by creation, optionally only those of @room. */
GPtrArray *sk_ingress_registry_list (SkIngressRegistry *self, const char *room);
/* Writes @rec through to the store after a change. */
void sk_ingress_registry_persist (SkIngressRegistry *self, SkIngressRecord *rec);
/* Ends a live session (ingress_deleted), forgets the record and frees it. */
void sk_ingress_registry_delete (SkIngressRegistry *self, SkIngressRecord *rec);

G_END_DECLS
