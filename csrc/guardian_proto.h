/*
 * guardian_proto.h - private to the C core: the records the freeze run
 * (vmsfreeze.c) sends to its guardian process (guardian.c) over a stream
 * socket.  The two sides share nothing else: the guardian is a separate
 * process that keeps its own copies of the mount fds and learns the run's
 * progress only from these records.  Not part of the cffi API.
 */
#ifndef GUARDIAN_PROTO_H
#define GUARDIAN_PROTO_H

#include <stdint.h>

#define NOTE_MAGIC	0x564d5346u	/* "VMSF" */

enum note_kind {
	NOTE_START = 1,		/* freeze begins; arg = timeout_ms */
	NOTE_INTENT = 2,	/* about to FIFREEZE mount index; arg = 1 if a
				   probe found it not frozen just before */
	NOTE_FROZEN = 3,	/* FIFREEZE of index succeeded */
	NOTE_NOT_OURS = 4,	/* FIFREEZE failed: never thaw index */
	NOTE_RELEASED = 5,	/* index was thawed (FITHAW attempted) */
	NOTE_END = 6,		/* clean end: exit without thawing */
	NOTE_CHILD = 7,		/* arg = a process group to kill on EOF */
	NOTE_CHILD_GONE = 8	/* arg = that group's leader was reaped */
};

/* One record, 16 bytes; a short send desynchronises the stream, so the
 * sender treats it as the guardian's loss. */
struct note {
	uint32_t magic;
	uint32_t kind;
	uint32_t index;
	int32_t arg;
};

#endif /* GUARDIAN_PROTO_H */
