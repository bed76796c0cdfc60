// The console: a host's page (a room, invitations, the stage) and a co-host's page (a banner, then "preparing to
// go live"), both built on the SDK and kept current by its live collections. Served by cohostd at /console, so
// the API is this page's own origin.

import {
  CohostError,
  createClient,
  type CohostClient,
  type InvitationHandle,
  type Room,
  type Seat,
  type Unsubscribe,
} from "../../ts/src/index.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function show(error: unknown) {
  const text = error instanceof CohostError ? `${error.code}: ${error.message}` : String(error);
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

/** Runs an action from a click, showing its failure instead of throwing it away. */
function act(action: () => Promise<unknown>) {
  $("error").hidden = true;
  action().catch(show);
}

function subjectOf(token: string): string {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(payload)).sub);
  } catch {
    return "?";
  }
}

function button(label: string, onClick: () => Promise<unknown>, name = label): HTMLButtonElement {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.name = name;
  element.addEventListener("click", () => act(onClick));
  return element;
}

function element(tag: string, text: string, className?: string): HTMLElement {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

// ---- the host's page ----

function hostPage(client: CohostClient) {
  $("host").hidden = false;
  let watching: Unsubscribe[] = [];
  let roomId: string | undefined;
  const inviteButton = $("invite").querySelector("button") as HTMLButtonElement;

  $("create-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = ($("room-id") as HTMLInputElement).value;
    const title = ($("room-title") as HTMLInputElement).value;
    act(async () => {
      try {
        await client.room(id).create(title ? { title } : {});
      } catch (error) {
        // The room exists already (this page was reloaded, say): open it; the API refuses a non-host.
        if (!(error instanceof CohostError && error.code === "already_exists")) throw error;
      }
      roomId = id;
      watching.forEach((stop) => stop());
      watching = [
        client.observeRoom(id, ({ data, error }) => {
          if (data) renderRoom(client, data);
          if (error) show(error);
        }),
        client.observeRoomInvitations({ roomId: id }, ({ data, error }) => {
          if (data) renderInvitations(data);
          if (error) show(error);
        }),
      ];
      inviteButton.disabled = false;
    });
  });
  $("go-live").addEventListener("click", () => act(() => client.room(roomId!).goLive()));
  $("stop-room").addEventListener("click", () => act(() => client.room(roomId!).stop()));
  $("invite").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = ($("invitee") as HTMLInputElement).value;
    act(() => client.room(roomId!).createInvitation(user));
  });
}

function renderRoom(client: CohostClient, room: Room) {
  $("room-status").textContent = `${room.room_id} (${room.title || "untitled"}): ${room.status}, version ${room.version}`;
  ($("go-live") as HTMLButtonElement).disabled = room.status !== "idle";
  ($("stop-room") as HTMLButtonElement).disabled = room.status === "ended";
  const stage = $("stage");
  stage.replaceChildren();
  for (let n = 1; n <= room.max_cohosts; n++) {
    const seat = room.cohosts.find((c) => c.seat === n);
    const locked = room.locked_seats.includes(n);
    const box = element("div", "", `seat${locked ? " locked" : ""}`);
    box.dataset.seat = String(n);
    box.append(element("h3", `Seat ${n}${locked ? " (locked)" : ""}`));
    if (seat) box.append(...occupied(client, room, seat));
    else if (room.status !== "ended") {
      const handle = client.room(room.room_id);
      box.append(locked ? button("Unlock", () => handle.unlockSeat(n)) : button("Lock", () => handle.lockSeat(n)));
    }
    stage.append(box);
  }
}

function occupied(client: CohostClient, room: Room, seat: Seat): HTMLElement[] {
  const handle = client.room(room.room_id);
  const user = seat.user_id;
  const media = `${seat.online ? "online" : "away"} · audio ${seat.audio ? "on" : "off"} · video ${seat.video ? "on" : "off"}`;
  const move = document.createElement("select");
  move.name = "move-to";
  for (let n = 1; n <= room.max_cohosts; n++) {
    if (n !== seat.seat) move.append(new Option(`to seat ${n}`, String(n)));
  }
  const controls = [
    element("p", user, "occupant"),
    element("p", media, "media"),
    button("Remove", () => handle.removeCohost(user)),
    button(seat.audio ? "Mute" : "Unmute", () => handle.setCohostMedia(user, { audio: !seat.audio }), "audio"),
    button(seat.video ? "Video off" : "Video on", () => handle.setCohostMedia(user, { video: !seat.video }), "video"),
  ];
  // A room of one seat has nowhere to move to.
  if (move.options.length > 0) controls.push(move, button("Move", () => handle.moveCohost(user, Number(move.value))));
  controls.push(button("Ban", () => handle.ban(user)));
  return controls;
}

function renderInvitations(invitations: InvitationHandle[]) {
  const body = $("invitations").querySelector("tbody") as HTMLElement;
  body.replaceChildren();
  for (const invitation of invitations) {
    const { data } = invitation;
    const row = document.createElement("tr");
    row.dataset.invitation = data.invitation_id;
    const status = element("td", data.status, `status status-${data.status}`);
    const actions = document.createElement("td");
    if (data.status === "pending") {
      actions.append(
        data.kind === "invite"
          ? button("Cancel", () => invitation.cancel())
          : button("Approve", () => invitation.accept()),
      );
    }
    row.append(element("td", data.invitation_id), element("td", data.user_id), element("td", data.kind), status, actions);
    body.append(row);
  }
}

// ---- the co-host's page ----

function cohostPage(client: CohostClient, me: string) {
  $("cohost").hidden = false;
  let stage: Unsubscribe | undefined;
  client.observeMyInvitations({ status: "pending" }, ({ data }) => {
    if (!data) return;
    const banners = $("banners");
    banners.replaceChildren();
    for (const invitation of data) {
      const { data: offer } = invitation;
      const banner = element("div", "", "banner");
      banner.dataset.invitation = offer.invitation_id;
      banner.append(
        element("p", `${offer.host} invites you to co-host ${offer.room_id}`),
        button("Accept", async () => {
          const { broadcaster } = await invitation.accept();
          stage?.();
          stage = preparing(client, me, offer.room_id, broadcaster?.url ?? "", broadcaster?.expires_ms ?? 0);
        }),
        button("Decline", () => invitation.reject()),
      );
      banners.append(banner);
    }
    $("idle").hidden = data.length > 0 || !$("preparing").hidden;
  });
}

/** The "preparing to go live" panel, kept current by the room's live collection until the seat ends. */
function preparing(client: CohostClient, me: string, roomId: string, url: string, expiresMs: number): Unsubscribe {
  $("preparing").hidden = false;
  $("idle").hidden = true;
  $("live-room").textContent = roomId;
  $("livekit-url").textContent = url;
  $("token-expiry").textContent = new Date(expiresMs).toLocaleTimeString();
  const leave = $("leave") as HTMLButtonElement;
  leave.onclick = () => act(() => client.room(roomId).leave());
  const stop = client.observeRoom(roomId, ({ data, error }) => {
    if (error) show(error);
    if (!data) return;
    const seat = data.cohosts.find((c) => c.user_id === me);
    if (!seat) {
      $("preparing").hidden = true;
      $("idle").hidden = false;
      $("idle").textContent = `You are no longer on the stage of ${roomId}.`;
      // Nothing more to follow here; a later accept opens the room again.
      queueMicrotask(stop);
      return;
    }
    $("live-seat").textContent = String(seat.seat);
    $("media").textContent = `Your audio is ${seat.audio ? "on" : "off (muted by the host)"}; video ${seat.video ? "on" : "off"}.`;
  });
  return stop;
}

// ---- sign in ----

function start(token: string, page: string) {
  const client = createClient({ baseUrl: window.location.origin, token: () => token });
  const me = subjectOf(token);
  $("sign-in").hidden = true;
  const who = $("who");
  who.textContent = `Signed in as ${me} (${page === "host" ? "host" : "co-host"})`;
  who.hidden = false;
  if (page === "host") hostPage(client);
  else cohostPage(client, me);
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ($("token") as HTMLInputElement).value.trim();
  const page = ($("page") as HTMLSelectElement).value;
  sessionStorage.setItem("cohost-console", JSON.stringify({ token, page }));
  start(token, page);
});

const saved = sessionStorage.getItem("cohost-console");
if (saved) {
  const { token, page } = JSON.parse(saved) as { token: string; page: string };
  start(token, page);
}
