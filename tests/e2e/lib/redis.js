// A throwaway redis-server (Debian's) on a free loopback port, with no persistence, in a
// temporary directory; stopped at teardown. Used by the scale-out tests (shared_state).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, spawnTracked, stopProcess, waitForPort } from './harness.js';

export const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server';

export async function startRedis(t) {
    if (!fs.existsSync(REDIS_SERVER)) throw new Error(`${REDIS_SERVER} not found (scripts/deps --test installs redis-server)`);
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-redis-'));
    const proc = spawnTracked(null, 'redis-server', REDIS_SERVER, [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
        '--dir', dir, '--protected-mode', 'yes', '--loglevel', 'warning',
    ]);
    t.after(async () => {
        try { process.kill(proc.pid, 'SIGCONT'); } catch { /* gone */ }
        await stopProcess(proc);
        fs.rmSync(dir, { recursive: true, force: true });
    });
    await waitForPort(port, { proc });
    return {
        port, proc, url: `redis://127.0.0.1:${port}`,
        async kill() { await stopProcess(proc); },
        pause() { process.kill(proc.pid, 'SIGSTOP'); },
        resume() { process.kill(proc.pid, 'SIGCONT'); },
    };
}

// Runs one redis-cli command against the server; resolves with its output (trimmed).
export function redisCli(redis, ...args) {
    const out = spawnSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${out.stderr}`);
    return out.stdout.trim();
}
