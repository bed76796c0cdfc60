// The cohost HTTP API in the seed's shape: `client.room(id).createInvitation(userId)`, `invitation.accept()`,
// `room.getBroadcasterData()`, and live collections whose callback gets `{ data, loading, error }`.
// No runtime dependency: `fetch`, `ReadableStream`, `TextDecoder` and `crypto.getRandomValues` are the platform's.

import { type Fold, type Observer, type Unsubscribe, observe } from "./live.js";
import { type ClientOptions, Transport } from "./transport.js";
import type {
  Accepted,
  BroadcasterData,
  Envelope,
  Invitation as InvitationData,
  InvitationKind,
  InvitationStatus,
  Page,
  Room as RoomData,
} from "./types.js";

export { CohostError, type ClientOptions, type TokenSource } from "./transport.js";
export type { LiveState, Observer, Unsubscribe } from "./live.js";
export type * from "./types.js";

const path = (segment: string) => encodeURIComponent(segment);

function query(params: Record<string, string | number | undefined>): string {
  const entries = Object.entries(params).filter((entry): entry is [string, string | number] => entry[1] !== undefined);
  return entries.length === 0 ? "" : `?${new URLSearchParams(entries.map(([k, v]) => [k, String(v)]))}`;
}

export interface ListOptions {
  status?: InvitationStatus;
  limit?: number;
  cursor?: string;
}

/** An invitation, or a request to join (its `data`), with what its parties may do to it. */
export class InvitationHandle {
  constructor(
    private readonly transport: Transport,
    readonly data: InvitationData,
  ) {}

  get id(): string {
    return this.data.invitation_id;
  }

  /** The responder takes the seat; a new co-host gets LiveKit credentials in `broadcaster`. */
  async accept(): Promise<Accepted> {
    return this.transport.call<Accepted>("POST", `/v1/invitations/${path(this.id)}/accept`, {});
  }

  async reject(): Promise<InvitationHandle> {
    return this.settle("reject");
  }

  /** The initiator (or the host's moderator) withdraws it. */
  async cancel(): Promise<InvitationHandle> {
    return this.settle("cancel");
  }

  private async settle(how: "reject" | "cancel"): Promise<InvitationHandle> {
    const data = await this.transport.call<InvitationData>("POST", `/v1/invitations/${path(this.id)}/${how}`, {});
    return new InvitationHandle(this.transport, data);
  }
}

/** One room: the host's commands, the stage controls, and its live collections. */
export class RoomHandle {
  constructor(
    private readonly transport: Transport,
    readonly id: string,
  ) {}

  private base(): string {
    return `/v1/rooms/${path(this.id)}`;
  }

  private command(suffix: string, body: unknown = {}): Promise<RoomData> {
    return this.transport.call<RoomData>("POST", `${this.base()}${suffix}`, body);
  }

  /** Creates the room with the caller as host. */
  create(options: { title?: string; maxCohosts?: number } = {}): Promise<RoomData> {
    const body = { room_id: this.id, title: options.title, max_cohosts: options.maxCohosts };
    return this.transport.call<RoomData>("POST", "/v1/rooms", body);
  }

  get(): Promise<RoomData> {
    return this.transport.call<RoomData>("GET", this.base());
  }

  goLive(): Promise<RoomData> {
    return this.command("/live");
  }

  /** Ends the room: every seat and pending offer ends with it. */
  stop(): Promise<RoomData> {
    return this.command("/stop");
  }

  async createInvitation(userId: string, options: { seat?: number } = {}): Promise<InvitationHandle> {
    const body = { user_id: userId, seat: options.seat };
    const data = await this.transport.call<InvitationData>("POST", `${this.base()}/invitations`, body);
    return new InvitationHandle(this.transport, data);
  }

  /** The caller asks for a seat ("raises a hand"). */
  async requestToJoin(options: { seat?: number } = {}): Promise<InvitationHandle> {
    const data = await this.transport.call<InvitationData>("POST", `${this.base()}/requests`, {
      seat: options.seat,
    });
    return new InvitationHandle(this.transport, data);
  }

  /** The room's invitations and requests (host and moderators). */
  async invitations(options: ListOptions = {}): Promise<Page<InvitationHandle>> {
    const page = await this.transport.call<Page<InvitationData>>(
      "GET",
      `${this.base()}/invitations${query({ status: options.status, limit: options.limit, cursor: options.cursor })}`,
    );
    return { items: page.items.map((item) => new InvitationHandle(this.transport, item)), next_cursor: page.next_cursor };
  }

  /** LiveKit credentials for the host, or a seated co-host, of a live room. */
  getBroadcasterData(): Promise<BroadcasterData> {
    return this.transport.call<BroadcasterData>("GET", `${this.base()}/broadcaster-data`);
  }

  leave(): Promise<RoomData> {
    return this.command("/leave");
  }

  removeCohost(userId: string): Promise<RoomData> {
    return this.transport.call<RoomData>("DELETE", `${this.base()}/cohosts/${path(userId)}`);
  }

  addModerator(userId: string): Promise<RoomData> {
    return this.command("/moderators", { user_id: userId });
  }

  removeModerator(userId: string): Promise<RoomData> {
    return this.transport.call<RoomData>("DELETE", `${this.base()}/moderators/${path(userId)}`);
  }

  openRequests(): Promise<RoomData> {
    return this.command("/requests/open");
  }

  closeRequests(): Promise<RoomData> {
    return this.command("/requests/close");
  }

  /** Moves a co-host to `seat`; whoever sits there takes the mover's seat. */
  moveCohost(userId: string, seat: number): Promise<RoomData> {
    return this.command(`/cohosts/${path(userId)}/move`, { seat });
  }

  lockSeat(seat: number): Promise<RoomData> {
    return this.command(`/seats/${seat}/lock`);
  }

  unlockSeat(seat: number): Promise<RoomData> {
    return this.command(`/seats/${seat}/unlock`);
  }

  /** What a co-host may publish; a source left out keeps its setting. */
  setCohostMedia(userId: string, media: { audio?: boolean; video?: boolean }): Promise<RoomData> {
    return this.command(`/cohosts/${path(userId)}/media`, media);
  }

  /** Bans a user for `durationS` seconds, or for the room's life. */
  ban(userId: string, options: { durationS?: number } = {}): Promise<RoomData> {
    return this.command("/bans", { user_id: userId, duration_s: options.durationS });
  }

  unban(userId: string): Promise<RoomData> {
    return this.transport.call<RoomData>("DELETE", `${this.base()}/bans/${path(userId)}`);
  }

  /** The room's history from the log (host and moderators). */
  events(options: { afterVersion?: number; limit?: number } = {}): Promise<Page<Envelope>> {
    const params = query({ after_version: options.afterVersion, limit: options.limit });
    return this.transport.call<Page<Envelope>>("GET", `${this.base()}/events${params}`);
  }
}

/** Keeps a list of invitations current: each change carries the invitation as it now is. */
function invitationFold(transport: Transport, status: InvitationStatus | undefined): Fold<InvitationHandle[]> {
  return {
    snapshot: (page) => (page as Page<InvitationData>).items.map((item) => new InvitationHandle(transport, item)),
    change(current, envelope) {
      const list = [...(current ?? [])];
      const changed = envelope.invitation;
      if (changed === undefined) return list;
      const at = list.findIndex((item) => item.id === changed.invitation_id);
      const kept = status === undefined || changed.status === status;
      const item = new InvitationHandle(transport, changed);
      if (at >= 0 && kept) list[at] = item;
      else if (at >= 0) list.splice(at, 1);
      else if (kept) list.push(item);
      return list;
    },
  };
}

/** Keeps a room current: an event that carries the room replaces it; any other is read back from the API. */
function roomFold(room: RoomHandle): Fold<RoomData> {
  return {
    snapshot: (data) => data as RoomData,
    change(current, envelope) {
      // A resume may replay an event older than the room read back after it: the newer one stays.
      if (current !== undefined && current.version >= envelope.version) return current;
      return envelope.room ?? room.get();
    },
  };
}

/** The API as one user sees it. */
export class CohostClient {
  private readonly transport: Transport;

  constructor(options: ClientOptions) {
    this.transport = new Transport(options);
  }

  room(roomId: string): RoomHandle {
    return new RoomHandle(this.transport, roomId);
  }

  /** The caller's invitations and requests as candidate. */
  async myInvitations(options: ListOptions & { kind?: InvitationKind } = {}): Promise<Page<InvitationHandle>> {
    const params = query({ status: options.status, kind: options.kind, limit: options.limit, cursor: options.cursor });
    const page = await this.transport.call<Page<InvitationData>>("GET", `/v1/me/invitations${params}`);
    return { items: page.items.map((item) => new InvitationHandle(this.transport, item)), next_cursor: page.next_cursor };
  }

  /** A room's invitations, live (host and moderators): the first 100 matching, then every change to them. */
  observeRoomInvitations(
    options: { roomId: string; status?: InvitationStatus },
    observer: Observer<InvitationHandle[]>,
  ): Unsubscribe {
    const url = `/v1/rooms/${path(options.roomId)}/invitations${query({ status: options.status, limit: 100 })}`;
    return observe(this.transport, url, invitationFold(this.transport, options.status), observer);
  }

  /** The caller's invitations as candidate, live: a co-host-to-be's banner. */
  observeMyInvitations(options: { status?: InvitationStatus }, observer: Observer<InvitationHandle[]>): Unsubscribe {
    const url = `/v1/me/invitations${query({ status: options.status, limit: 100 })}`;
    return observe(this.transport, url, invitationFold(this.transport, options.status), observer);
  }

  /** The room, live: the stage grid, and a co-host learning they were moved, muted or removed. */
  observeRoom(roomId: string, observer: Observer<RoomData>): Unsubscribe {
    const room = this.room(roomId);
    return observe(this.transport, `/v1/rooms/${path(roomId)}`, roomFold(room), observer);
  }
}

export function createClient(options: ClientOptions): CohostClient {
  return new CohostClient(options);
}
