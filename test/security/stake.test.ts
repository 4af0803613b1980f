/**
 * Issue 13, attack 5 (borrowed stake) and the DHT quota of attack 7, against a real anvil with the
 * StakeRegistry, real libp2p nodes on 127.0.0.1 and the real discovery and gateway catalog.
 *
 * - A supplier whose staking key signed its peer id (`gridpipe stake bind`, `--stake-binding`) is listed
 *   as staked; an unstaked peer naming that same address (with no binding, or with the honest supplier's
 *   binding copied into its own record) is not counted as staked and not routed to.
 * - An expired binding leaves a record unbound.
 * - A flood of records from fresh keys stops at a node's quota; a bound record still gets in.
 * - A record from an unbound peer does not make the gateway catalog fetch the manifest it names.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Wallet, type HDNodeWallet } from 'ethers';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Supplier } from '../../node/supplier.js';
import { GridClient } from '../../scheduler/client.js';
import { ModelCatalog } from '../../gateway/catalog.js';
import { cachedStakeCheck, isStakedRecord, ModelDiscovery } from '../../scheduler/discovery.js';
import { isPaidSpan } from '../../scheduler/payment.js';
import { generate } from '../../scheduler/generate.js';
import { attachStakeRegistry } from '../../contracts/index.js';
import { buildRecord, openRecord, signRecord } from '../../net/capacity/record.js';
import { findRecord, provideSupplier, publishRecord } from '../../net/capacity/dht.js';
import { makeStakeBinding, readStakeBindingFile, recordBinding, StakeBinder } from '../../net/capacity/binding.js';
import { createGridHost, type GridHost } from '../../net/host.js';
import { loadOrCreateIdentity } from '../../net/identity.js';
import { cidOfFile } from '../../fragments/cid.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { startSwarm, stopSwarm, testLogger, waitFor, type Swarm } from '../helpers/swarm.js';
import { keystoreOf, PASSPHRASE, smallGpt, startPaymentChain, TOKEN, type PaymentChain } from '../payments/helpers.js';

describe('stake bound to identity (issue 13, attack 5)', () => {
  const tmp = tempDir('gridpipe-stake-');
  let chain: PaymentChain;
  let staker: Wallet;
  let honest: Supplier;
  let borrower: Supplier;
  let copier: GridHost;
  let client: GridClient;
  let modelA: { fragDir: string; manifestCid: string };
  let modelB: { fragDir: string; manifestCid: string };
  const suppliers: Supplier[] = [];

  beforeAll(async () => {
    chain = await startPaymentChain(tmp.dir);
    staker = chain.wallets[1];
    await chain.mint(staker.address, 1000n);
    await chain.stake(staker, 100n * TOKEN);
    for (const d of ['a', 'b']) mkdirSync(path.join(tmp.dir, d));
    const a = await smallGpt(path.join(tmp.dir, 'a'), 2);
    const b = await smallGpt(path.join(tmp.dir, 'b'), 3);
    modelA = { fragDir: a.fragDir, manifestCid: await manifestCidOf(a.fragDir) };
    modelB = { fragDir: b.fragDir, manifestCid: await manifestCidOf(b.fragDir) };
    const logger = testLogger();
    const common = { network: 'local' as const, listen: ['/ip4/127.0.0.1/tcp/0'], logger, placement: false as const, gflops: 10 };

    // The honest supplier: its staking key signs its peer id with the CLI, as an operator would.
    const honestDir = path.join(tmp.dir, 'honest');
    const honestPeer = peerIdFromPrivateKey((await loadOrCreateIdentity(honestDir)).privateKey).toString();
    const keystore = await keystoreOf(staker, path.join(tmp.dir, 'staker.json'));
    const bindingFile = path.join(tmp.dir, 'binding.json');
    const bound = await runCli(['stake', 'bind', '--peer', honestPeer, '--wallet', keystore, '--chain-config', chain.configPath, '--days', '2', '--out', bindingFile], { env: { GRIDPIPE_PASSPHRASE: PASSPHRASE } });
    expect(bound.stderr).toBe('');
    expect(bound.code).toBe(0);
    honest = await Supplier.start({ ...common, dataDir: honestDir, host: [modelA.fragDir], stakingAddress: staker.address, stakeBinding: await readStakeBindingFile(bindingFile) });
    suppliers.push(honest);
    const bootstrap = [honest.addresses()[0]];

    // An unstaked peer naming the staked address, with no binding (what `--staking-address` alone gives).
    borrower = await Supplier.start({ ...common, dataDir: path.join(tmp.dir, 'borrower'), bootstrap, host: [modelA.fragDir, modelB.fragDir], stakingAddress: staker.address });
    suppliers.push(borrower);

    // An unstaked peer copying the honest record's binding into its own record (built with the record code).
    copier = await createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap, logger });
    await waitFor(() => copier.routingTableSize() >= 2, 'the copier to join');
    await waitFor(async () => (await findRecord(copier, honest.peerId, { timeoutMs: 2000 }))?.stakeBinding !== undefined, 'the honest record');
    const honestRecord = (await findRecord(copier, honest.peerId))!;
    const forged = buildRecord(copier.peerId, {
      stakingAddress: staker.address, stakeBinding: honestRecord.stakeBinding, pricePerGflop: '0',
      addrs: copier.addresses(), benchmark: { matmulGflops: 1e6, executionProvider: 'cpu', measuredAtMs: Date.now() },
      fragments: honestRecord.fragments.map((f) => ({ ...f, stepsPerSecond: 1e6, load: 0 })),
    });
    expect((await publishRecord(copier, await signRecord(copier.privateKey, forged))).ok).toBe(true);
    await provideSupplier(copier);

    client = await GridClient.connect({
      bootstrap, network: 'local', logger,
      stakeCheck: { rpcUrl: chain.config.rpcUrl, chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry },
    });
  }, 180_000);

  afterAll(async () => {
    await client?.close();
    await copier?.stop();
    for (const s of suppliers.reverse()) await s.stop().catch(() => undefined);
    await chain?.close();
    tmp.cleanup();
  });

  it('lists the bound, staked supplier as staked and routes to it, not to peers naming its address', async () => {
    expect(honest.stakeProblem).toBeUndefined();
    expect(borrower.stakeProblem).toMatch(/needs a stake binding/);
    const check = cachedStakeCheck(attachStakeRegistry(chain.config.stakeRegistry, chain.provider), 60_000, Date.now, { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry });

    // What every reader sees: only the honest record keeps the staking address.
    const records = await Promise.all([honest.peerId, borrower.peerId, copier.peerId.toString()].map((p) => findRecord(client.host, p)));
    expect(records.map((r) => r?.stakingAddress)).toEqual([staker.address, '', '']);
    expect(await Promise.all(records.map((r) => isStakedRecord(check, r!)))).toEqual([true, false, false]);

    // Discovery with the stake check (what routing draws from): the honest supplier only.
    const open = await client.openModel(modelA.manifestCid, 20_000);
    const hosts = new Set((await open.discovery.refresh()).map((s) => s.peerId));
    expect([...hosts]).toEqual([honest.peerId]);
    // And a generation runs on it (the copier advertises a million GFLOP/s: routing would prefer it).
    const session = client.session(open, 8);
    try {
      const inputNames = open.manifest.model.inputs.map((i) => i.name).filter((n) => !n.startsWith('past_key_values'));
      const tokens: number[] = [];
      for await (const t of generate(session, { promptIds: [1, 2, 3], maxTokens: 3, kvCache: true, inputNames })) tokens.push(t.id);
      expect(tokens).toHaveLength(3);
      expect(new Set(session.route.map((r) => r.peerId))).toEqual(new Set([honest.peerId]));
      expect(session.failovers).toBe(0);
    } finally {
      await session.close();
    }

    // Without a chain (an open grid) the others are routable but never paid as the staker.
    const free = new ModelDiscovery(client.swarm, modelA.manifestCid);
    const spans = await free.refresh();
    expect(new Set(spans.map((s) => s.peerId))).toEqual(new Set([honest.peerId, borrower.peerId, copier.peerId.toString()]));
    for (const s of spans) expect(s.stakingAddress === staker.address).toBe(s.peerId === honest.peerId);
    expect(spans.filter((s) => s.peerId !== honest.peerId).some(isPaidSpan)).toBe(false);
  }, 60_000);

  it('does not fetch a manifest that only an unbound peer names; an open catalog would', async () => {
    const check = cachedStakeCheck(attachStakeRegistry(chain.config.stakeRegistry, chain.provider), 60_000, Date.now, { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry });
    const staked = new ModelCatalog(client, { refreshEveryMs: 0, stakeCheck: check, logger: testLogger() });
    const open = new ModelCatalog(client, { refreshEveryMs: 0, logger: testLogger() });
    try {
      await staked.start();
      await open.start();
      const cids = (c: ModelCatalog): string[] => c.all().map((m) => m.open.manifestCid).sort();
      // The control: model B's manifest is fetchable (the open catalog fetched it from the borrower).
      expect(cids(open)).toEqual([modelA.manifestCid, modelB.manifestCid].sort());
      expect(cids(staked)).toEqual([modelA.manifestCid]);
      expect(staked.all()[0].hosts).toBe(1);
    } finally {
      await staked.close();
      await open.close();
    }
  }, 60_000);

  it('treats an expired or misdirected binding as no binding', async () => {
    const key = await generateKeyPair('Ed25519');
    const peer = peerIdFromPrivateKey(key).toString();
    const domain = { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry };
    const signed = async (statement: Awaited<ReturnType<typeof makeStakeBinding>>): Promise<Uint8Array> =>
      signRecord(key, buildRecord(peer, { stakingAddress: statement.operator, stakeBinding: recordBinding(statement) }));

    const fresh = await makeStakeBinding(staker, peer, domain, 3600);
    const ok = await openRecord(await signed(fresh));
    expect(ok.stake.bound).toBe(true);
    expect(ok.record.stakingAddress).toBe(staker.address);

    const expired = await makeStakeBinding(staker, peer, domain, 60, Date.now() - 3600_000);
    const late = await openRecord(await signed(expired));
    expect(late.stake).toEqual({ bound: false, claimed: staker.address, reason: 'EXPIRED' });
    expect(late.record.stakingAddress).toBe('');
    expect(late.record.stakeBinding).toBeUndefined();

    // Signed by someone else than the address it names.
    const other = await makeStakeBinding(chain.wallets[2], peer, domain, 3600);
    const lie = await openRecord(await signRecord(key, buildRecord(peer, { stakingAddress: staker.address, stakeBinding: recordBinding(other) })));
    expect(lie.stake.reason).toBe('WRONG_SIGNER');
    expect(lie.record.stakingAddress).toBe('');

    // Bound for another registry: verified, but not for this chain's stake check.
    const elsewhere = await makeStakeBinding(staker, peer, { chainId: domain.chainId, stakeRegistry: Wallet.createRandom().address }, 3600);
    const foreign = await openRecord(await signed(elsewhere));
    expect(foreign.stake.bound).toBe(true);
    const check = cachedStakeCheck(attachStakeRegistry(chain.config.stakeRegistry, chain.provider), 60_000, Date.now, domain);
    expect(await isStakedRecord(check, foreign.record)).toBe(false);
    expect(await isStakedRecord(check, ok.record)).toBe(true);
  });

  it('a supplier with its staking key signs its own binding and signs again before it runs out', async () => {
    const key = await generateKeyPair('Ed25519');
    const peer = peerIdFromPrivateKey(key).toString();
    const domain = { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry };
    const binder = new StakeBinder({ peerId: peer, wallet: staker, domain, validForSeconds: 4 * 86400 });
    const t0 = Date.now();
    const first = await binder.current(t0);
    expect(first.stakingAddress).toBe(staker.address);
    const open = async (fields: typeof first, now: number): Promise<string> =>
      (await openRecord(await signRecord(key, buildRecord(peer, fields, { now })), { now })).record.stakingAddress;
    expect(await open(first, t0)).toBe(staker.address);
    // One day on: the same binding. Three days on (less than half left): a new one, still good four days later.
    expect((await binder.current(t0 + 86400_000)).stakeBinding?.until).toBe(first.stakeBinding?.until);
    const later = await binder.current(t0 + 3 * 86400_000);
    expect(later.stakeBinding!.until).toBeGreaterThan(first.stakeBinding!.until);
    expect(await open(first, t0 + 5 * 86400_000)).toBe('');
    expect(await open(later, t0 + 5 * 86400_000)).toBe(staker.address);
  });

  it('a full quota with a stake check keeps bound and staked records over merely bound ones', async () => {
    const store = await createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger: testLogger(), dht: { maxCapacityRecords: 2 } });
    const sender = await createGridHost({ network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], logger: testLogger(), bootstrap: [store.addresses()[0]] });
    try {
      store.capacityQuota.stakeCheck = attachStakeRegistry(chain.config.stakeRegistry, chain.provider);
      await waitFor(() => sender.routingTableSize() >= 1 && store.routingTableSize() >= 1, 'the two nodes to meet');
      const domain = { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry };
      const put = async (wallet: Wallet | HDNodeWallet): Promise<boolean> => {
        const key = await generateKeyPair('Ed25519');
        const peer = peerIdFromPrivateKey(key).toString();
        const binding = await makeStakeBinding(wallet, peer, domain, 3600);
        const record = buildRecord(peer, { stakingAddress: wallet.address, stakeBinding: recordBinding(binding) });
        return (await publishRecord(sender, await signRecord(key, record), { timeoutMs: 5000 })).accepted.includes(store.peerId.toString());
      };
      // Two bound but unstaked fill it; a third of the same rank is refused; a staked one gets in.
      expect([await put(Wallet.createRandom()), await put(Wallet.createRandom()), await put(Wallet.createRandom())]).toEqual([true, true, false]);
      expect(await put(staker)).toBe(true);
      expect(store.capacityQuota.size).toBe(2);
    } finally {
      await sender.stop();
      await store.stop();
    }
  }, 60_000);

  it('a supplier started with a binding for another peer says so and runs unstaked', async () => {
    const other = await makeStakeBinding(staker, honest.peerId, { chainId: chain.config.chainId, stakeRegistry: chain.config.stakeRegistry }, 3600);
    const s = await Supplier.start({
      dataDir: path.join(tmp.dir, 'mismatch'), network: 'local', listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [honest.addresses()[0]],
      logger: testLogger(), placement: false, gflops: 10, host: [], stakingAddress: staker.address, stakeBinding: other,
    });
    try {
      expect(s.stakeProblem).toMatch(/names peer .* not this supplier/);
      await waitFor(async () => (await findRecord(client.host, s.peerId, { timeoutMs: 2000 })) !== undefined, 'the mismatched supplier\'s record');
      const r = await findRecord(client.host, s.peerId);
      expect(r?.stakingAddress).toBe('');
    } finally {
      await s.stop();
    }
  }, 60_000);
});

describe('DHT quota on capacity records (issue 13, attack 7)', () => {
  let swarm: Swarm;
  const QUOTA = 8;

  beforeAll(async () => {
    // Node 0 stores with a small quota; node 1 is the attacker's own node (a large one, so its local puts go through).
    swarm = await startSwarm(2, { perNode: (i) => ({ dht: { maxCapacityRecords: i === 0 ? QUOTA : 1000 } }) });
  }, 60_000);

  afterAll(async () => { await stopSwarm(swarm); });

  it('stores at most its quota from a flood of fresh keys, and still takes a bound record', async () => {
    const [victim, attacker] = swarm.hosts;
    const victimId = victim.peerId.toString();
    let storedByVictim = 0;
    for (let i = 0; i < 3 * QUOTA; i++) {
      const key = await generateKeyPair('Ed25519');
      const record = buildRecord(peerIdFromPrivateKey(key), { pricePerGflop: '0', stakingAddress: Wallet.createRandom().address });
      const result = await publishRecord(attacker, await signRecord(key, record), { timeoutMs: 5000 });
      if (result.accepted.includes(victimId)) storedByVictim++;
    }
    expect(storedByVictim).toBe(QUOTA);
    expect(victim.capacityQuota.size).toBe(QUOTA);
    expect(Number((await victim.capacityMetrics.rejected.get()).values.find((v) => v.labels.reason === 'QUOTA')?.value ?? 0)).toBe(2 * QUOTA);

    // A bound record outranks the unbound flood: one of those makes room.
    const key = await generateKeyPair('Ed25519');
    const peer = peerIdFromPrivateKey(key).toString();
    const wallet = Wallet.createRandom();
    const statement = await makeStakeBinding(wallet, peer, { chainId: 31337, stakeRegistry: Wallet.createRandom().address }, 3600);
    const bound = buildRecord(peer, { stakingAddress: wallet.address, stakeBinding: recordBinding(statement) });
    const result = await publishRecord(attacker, await signRecord(key, bound), { timeoutMs: 5000 });
    expect(result.accepted).toContain(victimId);
    expect(victim.capacityQuota.size).toBe(QUOTA);
    const read = await findRecord(victim, peer, { timeoutMs: 2000 });
    expect(read?.stakingAddress).toBe(wallet.address);
  }, 120_000);
});

function manifestCidOf(fragDir: string): Promise<string> {
  return cidOfFile(path.join(fragDir, 'manifest.json'));
}
