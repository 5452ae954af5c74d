/*
 * streamkeeper: the X-Streamkeeper-Participant header of the cluster's internal publish
 * endpoint (see rooms/sk-remote.h), validated. Untrusted input (anyone who reaches the HTTP
 * port, even if only a node with the cluster secret gets this far): no sockets, no rooms, so
 * the fuzz target links it alone.
 */
#pragma once

#include <glib.h>

#include "rooms/sk-track.h"

G_BEGIN_DECLS

/* A header larger than this is refused before it is parsed. */
#define SK_WHIP_PARTICIPANT_MAX_BYTES 4096
/* One video and one audio track, as a WHIP offer carries. */
#define SK_WHIP_PARTICIPANT_MAX_TRACKS 2

typedef struct {
  char *sid; /* TR_… */
  SkTrackKind kind;
} SkWhipParticipantTrack;

typedef struct {
  char *sid; /* PA_… */
  char *identity;
  char *name;
  char *kind; /* participant kind, e.g. "ingress" */
  char *ingress_node;
  guint n_tracks; /* ≥ 1, in m-line order */
  SkWhipParticipantTrack tracks[SK_WHIP_PARTICIPANT_MAX_TRACKS];
} SkWhipParticipant;

/*
 * Parses @value (@len bytes, not NUL-terminated). FALSE with SK_ERROR_INVALID (or
 * SK_ERROR_TOO_LARGE) and a message that says what is wrong: not a JSON object, a field
 * missing or of the wrong type or size, a sid without its prefix or with other characters
 * than [A-Za-z0-9_], a track kind other than video/audio, two tracks of a kind or sid.
 */
SkWhipParticipant *sk_whip_participant_parse (const char *value, gsize len, GError **error);
void sk_whip_participant_free (SkWhipParticipant *participant);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkWhipParticipant, sk_whip_participant_free)

/* The track of @kind, or NULL. */
const SkWhipParticipantTrack *sk_whip_participant_get_track (const SkWhipParticipant *participant,
                                                             SkTrackKind kind);

G_END_DECLS
