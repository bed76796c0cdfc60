// The wire types of the contract (proto/README.md), as the HTTP API sends them.

export type RoomStatus = "idle" | "live" | "ended";
export type InvitationStatus = "pending" | "approved" | "rejected" | "cancelled" | "expired";
export type InvitationKind = "invite" | "request";

/** A co-host's place on the stage. */
export interface Seat {
  user_id: string;
  invitation_id: string;
  since_ms: number;
  /** Whether LiveKit last reported the co-host as connected. */
  online: boolean;
  /** 1 to the room's max_cohosts. */
  seat: number;
  /** Whether the co-host may publish audio, and video (the host's media controls). */
  audio: boolean;
  video: boolean;
}

export interface Room {
  room_id: string;
  host: string;
  title: string;
  status: RoomStatus;
  max_cohosts: number;
  cohosts: Seat[];
  /** The number of events applied to the room: its version. */
  version: number;
  moderators: string[];
  locked_seats: number[];
  requests_open: boolean;
}

export interface Invitation {
  /** `{room_id}.{n}`. */
  invitation_id: string;
  room_id: string;
  kind: InvitationKind;
  host: string;
  /** The candidate: who would take the seat. */
  user_id: string;
  status: InvitationStatus;
  created_ms: number;
  updated_ms: number;
  expires_ms: number;
  seat: number | null;
}

/** LiveKit credentials for one participant: keep them to that participant. */
export interface BroadcasterData {
  url: string;
  token: string;
  role: "host" | "cohost";
  expires_ms: number;
}

export interface Accepted {
  invitation: Invitation;
  /** The new co-host's credentials, when the caller is the new co-host. */
  broadcaster: BroadcasterData | null;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** One committed event with its place in the log; the event's `type` and fields sit beside these. */
export interface Envelope {
  seq: number;
  room_id: string;
  version: number;
  event_id: string;
  at_ms: number;
  actor: string | null;
  /** The backend service that caused it with a service credential; absent otherwise. */
  service?: string;
  command_id?: string | null;
  type: string;
  room?: Room;
  invitation?: Invitation;
  user_id?: string;
  [field: string]: unknown;
}

/** The contract's error codes. */
export type ErrorCode =
  | "invalid_argument"
  | "unauthenticated"
  | "permission_denied"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "resource_exhausted"
  | "conflict"
  | "unavailable"
  | "internal";
