// The SDK against a real cohostd (COHOST_BIN; `cargo test -p cohostd --test sdk` sets it): the seed's flow, the
// live collections, typed errors, a token asked for again on 401, a retried command applied once, and a live
// collection that resumes across a restart of the daemon without missing or repeating anything.

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { CohostError, createClient } from "../dist/index.js";

const BIN = process.env.COHOST_BIN;
if (!BIN) throw new Error("set COHOST_BIN to a cohostd binary (cargo test -p cohostd --test sdk does)");

const dataDir = mkdtempSync(join(tmpdir(), "cohost-sdk-"));
let port;
let daemon;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const base = () => `http://127.0.0.1:${port}`;

async function start() {
  daemon = spawn(
    BIN,
    ["--data-dir", dataDir, "--http-addr", `127.0.0.1:${port}`, "--user-commands-per-s", "1000"],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${base()}/readyz`)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("cohostd did not become ready");
}

async function stop() {
  const exited = new Promise((resolve) => daemon.once("exit", resolve));
  daemon.kill("SIGTERM");
  await exited;
}

const token = (user) =>
  execFileSync(BIN, ["--data-dir", dataDir, "token", "--user", user], { encoding: "utf8" }).trim();

const clientFor = (user, options = {}) => createClient({ baseUrl: base(), token: () => token(user), ...options });

/** The observer's states, and a wait for one that satisfies `predicate`. */
function watch() {
  const states = [];
  const waiters = [];
  const observer = (state) => {
    states.push(state);
    for (const waiter of [...waiters]) {
      if (waiter.predicate(state)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(state);
      }
    }
  };
  const until = (predicate, what, timeoutMs = 20_000) => {
    const seen = states.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      waiters.push({ predicate, resolve: (state) => (clearTimeout(timer), resolve(state)) });
    });
  };
  return { observer, states, until };
}

before(async () => {
  port = await freePort();
  await start();
});

after(async () => {
  await stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test("the seed's flow, with live collections on both sides", async () => {
  const host = clientFor("alice");
  const guest = clientFor("bob");
  const room = host.room("show-1");
  await room.create({ title: "Friday show" });
  await room.goLive();

  const banner = watch();
  const stopBanner = guest.observeMyInvitations({ status: "pending" }, banner.observer);
  await banner.until((s) => !s.loading && s.data.length === 0, "an empty banner");
  assert.equal(banner.states[0].loading, true, "loading until the snapshot");

  const list = watch();
  const stopList = host.observeRoomInvitations({ roomId: "show-1" }, list.observer);
  const invitation = await room.createInvitation("bob");
  assert.equal(invitation.data.status, "pending");

  const pending = await banner.until((s) => s.data?.length === 1, "bob's pending invitation");
  const accepted = await pending.data[0].accept();
  assert.equal(accepted.invitation.status, "approved");
  assert.equal(accepted.broadcaster.role, "cohost");
  await banner.until((s) => s.data?.length === 0, "the banner cleared once accepted");
  await list.until((s) => s.data?.[0]?.data.status === "approved", "the host's list showing the approval");

  const stage = watch();
  const stopStage = guest.observeRoom("show-1", stage.observer);
  await stage.until((s) => s.data?.cohosts.some((c) => c.user_id === "bob"), "bob on the stage");
  await room.setCohostMedia("bob", { audio: false });
  const muted = await stage.until((s) => s.data?.cohosts[0]?.audio === false, "bob muted, seen by bob");
  assert.equal(muted.data.cohosts[0].video, true);

  const credentials = await guest.room("show-1").getBroadcasterData();
  assert.equal(credentials.role, "cohost");
  assert.ok(credentials.token.length > 0);

  await room.removeCohost("bob");
  await stage.until((s) => s.data?.cohosts.length === 0, "bob removed, seen by bob");
  stopBanner();
  stopList();
  stopStage();
});

test("errors carry the contract's code", async () => {
  const host = clientFor("carol");
  await host.room("show-2").create();
  const stranger = clientFor("dave");
  await assert.rejects(stranger.room("show-2").stop(), (error) => {
    assert.ok(error instanceof CohostError);
    assert.equal(error.code, "permission_denied");
    assert.equal(error.status, 403);
    return true;
  });
  await assert.rejects(host.room("show-2").create(), (error) => error.code === "already_exists");
  await assert.rejects(host.room("no such room!").get(), (error) => error.code === "invalid_argument");
});

test("a 401 asks the token source again, once", async () => {
  const asked = [];
  const client = createClient({
    baseUrl: base(),
    token: (refresh) => {
      asked.push(refresh);
      return refresh ? token("erin") : "not-a-jwt";
    },
  });
  const room = await client.room("show-3").create();
  assert.equal(room.host, "erin");
  assert.deepEqual(asked, [false, true]);
  const stale = createClient({ baseUrl: base(), token: () => "not-a-jwt" });
  await assert.rejects(stale.room("show-4").create(), (error) => error.code === "unauthenticated");
});

test("a token source that failed once is asked again on the next call", async () => {
  let calls = 0;
  const client = createClient({
    baseUrl: base(),
    token: async () => {
      calls++;
      if (calls === 1) throw new Error("the identity provider is down");
      return token("olivia");
    },
  });
  await assert.rejects(client.room("show-7").create(), (error) => error.code === "unauthenticated");
  const room = await client.room("show-7").create();
  assert.equal(room.host, "olivia");
});

test("a command whose answer was lost is retried with the same key and applied once", async () => {
  const host = clientFor("frank");
  await host.room("show-5").create();
  await host.room("show-5").goLive();
  let dropped = 0;
  const lossy = clientFor("frank", {
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      if (init?.method === "POST" && String(url).endsWith("/invitations") && dropped === 0) {
        dropped++;
        throw new TypeError("the connection dropped before the answer");
      }
      return response;
    },
  });
  const invitation = await lossy.room("show-5").createInvitation("grace");
  assert.equal(dropped, 1);
  const page = await host.room("show-5").invitations();
  assert.deepEqual(
    page.items.map((item) => item.id),
    [invitation.id],
    "one invitation, the one the retry was answered with",
  );
});

test("a live collection resumes across a daemon restart, missing nothing and repeating nothing", async () => {
  const host = clientFor("heidi");
  const room = host.room("show-6");
  await room.create();
  await room.goLive();
  await room.createInvitation("ivan");
  const list = watch();
  const unsubscribe = host.observeRoomInvitations({ roomId: "show-6" }, list.observer);
  await list.until((s) => s.data?.length === 1, "the snapshot");

  await stop();
  await list.until((s) => s.error !== undefined, "the drop reported");
  await start();
  await room.createInvitation("judy");
  await room.createInvitation("mallory");
  const resumed = await list.until((s) => s.data?.length === 3 && s.error === undefined, "the changes after the restart");
  assert.deepEqual(
    resumed.data.map((item) => item.data.user_id),
    ["ivan", "judy", "mallory"],
  );
  const ids = resumed.data.map((item) => item.id);
  assert.equal(new Set(ids).size, ids.length, "no invitation twice");
  unsubscribe();
});
