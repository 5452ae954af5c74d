/*
 * streamkeeper: webhook delivery. Events are queued per URL and POSTed in order from the main
 * loop with retries and exponential backoff; a slow or dead receiver only grows its own queue
 * (bounded by webhook_queue_max, oldest dropped with a warning), never delays media or rooms.
 * Each POST is signed: `X-Streamkeeper-Signature: sha256=<hex HMAC-SHA256(body, secret)>`
 * and a LiveKit-style `Authorization: <JWT HS256 {sha256: base64(sha256(body))}>`.
 */
#pragma once

#include <json-glib/json-glib.h>

#include "common/sk-config.h"

G_BEGIN_DECLS

typedef struct _SkWebhooks SkWebhooks;

SkWebhooks *sk_webhooks_new (const SkConfig *config);
void sk_webhooks_free (SkWebhooks *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkWebhooks, sk_webhooks_free)

/*
 * Queues @event (LiveKit webhook name: participant_joined, participant_left, track_published,
 * track_unpublished, ingress_started, ingress_ended, room_started, room_finished) with the
 * fields of @payload merged in ({"event": …, "id": …, "createdAt": …, …}).
 */
void sk_webhooks_send (SkWebhooks *self, const char *event, JsonObject *payload);

/* Waits (bounded by @timeout_ms) for the queues to drain; used at shutdown. */
void sk_webhooks_flush (SkWebhooks *self, guint timeout_ms);

G_END_DECLS
