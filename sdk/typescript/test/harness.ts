// A real pgbusd on the throwaway Postgres that ctest's fixture started
// (PGBUS_TEST_PG_DIR, PGBUSD), one per test, each with a tenant of its own.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, openSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

function env(): { pgbusd: string; pgDir: string } {
  const pgbusd = process.env.PGBUSD ?? "";
  const pgDir = process.env.PGBUS_TEST_PG_DIR ?? "";
  if (!pgbusd || !pgDir) {
    throw new Error("run through ctest (make test): PGBUSD and PGBUS_TEST_PG_DIR are not set");
  }
  return { pgbusd, pgDir };
}

export function dsn(user: string): string {
  return `host=${env().pgDir}/run dbname=pgbus user=${user}`;
}

export function randomName(prefix: string): string {
  return prefix + randomBytes(6).toString("hex");
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "pgbus-ts-"));
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = tcpConnect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

export interface ServerOptions {
  /** API keys checked (no dev mode). */
  auth?: boolean;
  /** Extra flags (TLS files, say). */
  args?: string[];
}

export class Server {
  readonly tenant = randomName("ts-");
  target = "";
  private port = 0;
  private proc: ChildProcess | undefined;
  readonly log = join(tempDir(), "pgbusd.log");

  constructor(private readonly options: ServerOptions = {}) {}

  async start(): Promise<void> {
    const { pgbusd } = env();
    if (!this.port) {
      this.port = await freePort();
      this.target = `127.0.0.1:${this.port}`;
    }
    const args = ["serve", "--listen", this.target, "--poll-interval-ms", "100", ...(this.options.args ?? [])];
    if (!this.options.auth) args.push("--dev-mode", "--default-tenant", this.tenant);
    const out = openSync(this.log, "a");
    this.proc = spawn(pgbusd, args, {
      env: { ...process.env, PGBUS_DATABASE_URL: dsn("pgbus_app") },
      stdio: ["ignore", out, out],
    });
    for (let i = 0; i < 200; i++) {
      if (await canConnect(this.port)) return;
      await sleep(50);
    }
    throw new Error(`pgbusd did not start; log: ${this.log}`);
  }

  /** Stops pgbusd with `signal` and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill(signal);
    await exited;
  }
}

export async function startServer(options: ServerOptions = {}): Promise<Server> {
  const s = new Server(options);
  await s.start();
  return s;
}

/** `pgbusd <args>` with the schema owner's connection; its stdout. */
export function operator(...args: string[]): string {
  return execFileSync(env().pgbusd, args, {
    env: { ...process.env, PGBUS_DATABASE_URL: dsn("pgbus_owner") },
  })
    .toString()
    .trim();
}

/** A statement as the schema owner with the tenant set; the last line of its output. */
export function sql(tenant: string, statement: string): string {
  const out = execFileSync("psql", [dsn("pgbus_owner"), "-qAtX", "-v", "ON_ERROR_STOP=1"], {
    input: `SELECT set_config('pgbus.tenant_id', '${tenant}', false);\n${statement}`,
  })
    .toString()
    .trim()
    .split("\n");
  return out.length < 2 ? "" : out[out.length - 1];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 20 ms until true or `timeoutMs`; returns its last value. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return true;
    await sleep(20);
  }
  return cond();
}
