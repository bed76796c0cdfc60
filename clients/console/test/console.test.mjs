// The console in headless Chromium (Debian's, driven by playwright-core) against a real cohostd serving it at
// /console: a host and a co-host, each in a browser context of their own, run the seed's flow through the pages,
// and each sees the other's changes live. Screenshots of both pages go to SCREENSHOT_DIR.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const BIN = process.env.COHOST_BIN;
if (!BIN) throw new Error("set COHOST_BIN to a cohostd binary (cargo test -p cohostd --test console does)");
const DIST = resolve(process.env.CONSOLE_DIST ?? "dist");
const SHOTS = resolve(process.env.SCREENSHOT_DIR ?? "test-artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const WAIT_MS = 15_000;

const dataDir = mkdtempSync(join(tmpdir(), "cohost-console-"));
let daemon;
let browser;
let base;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

before(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  daemon = spawn(BIN, ["--data-dir", dataDir, "--http-addr", `127.0.0.1:${port}`, "--console-dir", DIST], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error("cohostd did not become ready");
    await new Promise((done) => setTimeout(done, 50));
  }
  // Without the background-networking flags Chromium keeps dialling out, and this machine refuses it.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (daemon) {
    const exited = new Promise((done) => daemon.once("exit", done));
    daemon.kill("SIGTERM");
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

const token = (user) =>
  execFileSync(BIN, ["--data-dir", dataDir, "token", "--user", user], { encoding: "utf8" }).trim();

async function signIn(user, page) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const tab = await context.newPage();
  await tab.goto(`${base}/console/`);
  await tab.fill("#token", token(user));
  await tab.selectOption("#page", page);
  await tab.click("#sign-in button[type=submit]");
  await tab.locator("#who").getByText(`Signed in as ${user}`).waitFor({ timeout: WAIT_MS });
  return tab;
}

const text = (tab, selector, expected) =>
  tab.locator(selector).filter({ hasText: expected }).first().waitFor({ timeout: WAIT_MS });

test("a host and a co-host run the seed's flow through the console, each seeing the other live", async () => {
  const host = await signIn("alice", "host");
  const guest = await signIn("bob", "cohost");
  await text(guest, "#idle", "No invitation yet.");

  await host.fill("#room-id", "show-1");
  await host.fill("#room-title", "Friday show");
  await host.click("#create-room button[type=submit]");
  await text(host, "#room-status", "idle");
  await host.click("#go-live");
  await text(host, "#room-status", "live");

  await host.fill("#invitee", "bob");
  await host.click("#invite button[type=submit]");
  await text(host, 'tr[data-invitation="show-1.1"] .status', "pending");

  // The co-host's banner arrives by itself; accepting it shows the LiveKit details.
  await text(guest, ".banner", "alice invites you to co-host show-1");
  await guest.locator(".banner button[name=Accept]").click();
  await text(guest, "#livekit-url", "ws://localhost:7880");
  await text(guest, "#live-seat", "1");

  // The host's list and stage follow.
  await text(host, 'tr[data-invitation="show-1.1"] .status', "approved");
  await text(host, '.seat[data-seat="1"] .occupant', "bob");

  // A mute from the host reaches the co-host's page.
  await host.locator('.seat[data-seat="1"] button[name=audio]').click();
  await text(host, '.seat[data-seat="1"] .media', "audio off");
  await text(guest, "#media", "muted by the host");

  mkdirSync(SHOTS, { recursive: true });
  await host.screenshot({ path: join(SHOTS, "console-host.png"), fullPage: true });
  await guest.screenshot({ path: join(SHOTS, "console-cohost.png"), fullPage: true });

  // Removed by the host: the co-host's page says so.
  await host.locator('.seat[data-seat="1"] button[name=Remove]').click();
  await text(guest, "#idle", "no longer on the stage of show-1");
  assert.equal(await guest.locator("#preparing").isHidden(), true);
});
