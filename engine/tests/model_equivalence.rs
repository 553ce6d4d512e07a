//! Property test: random sequences of deliveries, deletions, expiry (manual
//! clock), compaction and reopen give the same observable state in the
//! log-backed engine as in the in-memory reference model (`model/`): the
//! same mailboxes, messages, sequence numbers, raw bytes and outcomes, the
//! same mailboxes and keys per owner; and the engine's own indexes (by
//! owner, address, token; the message count) equal a full scan after
//! every step.

mod common;
mod model;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use model::Model;
use proptest::prelude::*;
use uncorreo_engine::*;

const NAMES: [&str; 4] = ["ana", "bo", "cy", "di"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: usize,
        /// 0: anonymous (a token per name); 1, 2: one of the two users.
        owner: usize,
        ttl_ms: u64,
        max: u32,
    },
    CreateKey {
        user: usize,
        hash: u8,
    },
    Deliver {
        to: Vec<(usize, bool)>,
        size: usize,
        key: Option<u8>,
    },
    DeleteMessage {
        name: usize,
        nth: usize,
    },
    DeleteMailbox {
        name: usize,
    },
    Advance {
        ms: u64,
    },
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize, 0..3usize, prop_oneof![Just(2_000u64), Just(20_000), Just(10_000_000)], 1..6u32)
            .prop_map(|(name, owner, ttl_ms, max)| Op::Create { name, owner, ttl_ms, max }),
        1 => (0..2usize, 0..4u8).prop_map(|(user, hash)| Op::CreateKey { user, hash }),
        6 => (proptest::collection::vec((0..4usize, any::<bool>()), 1..4), 20..2500usize, proptest::option::weighted(0.2, 0..3u8))
            .prop_map(|(to, size, key)| Op::Deliver { to, size, key }),
        2 => (0..4usize, 0..6usize).prop_map(|(name, nth)| Op::DeleteMessage { name, nth }),
        1 => (0..4usize).prop_map(|name| Op::DeleteMailbox { name }),
        2 => (0..6_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

struct World {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Option<Engine>,
    model: Model,
    /// model mailbox id → engine mailbox id
    ids: HashMap<MailboxId, MailboxId>,
    /// last created mailbox per name (model ids)
    last: HashMap<usize, MailboxId>,
    /// The two users: (model id, engine id).
    users: [(UserId, UserId); 2],
    counter: u64,
}

fn cfg(dir: &std::path::Path, ratio: f64) -> EngineConfig {
    let mut c = config(dir);
    c.segment_bytes = 8192;
    c.durability = Durability::NeverUnsafeForLoadTests;
    c.compaction_live_ratio = ratio;
    c
}

impl World {
    fn new(ratio: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let engine =
            Engine::open_with_clock(cfg(dir.path(), ratio), clock.clone() as Arc<dyn Clock>)
                .unwrap();
        let model = Model::open_with_clock(cfg(dir.path(), ratio), clock.clone() as Arc<dyn Clock>)
            .unwrap();
        let users = [0, 1].map(|i| {
            let name = format!("user{i}");
            let m = block_on(model.create_user(name.clone())).unwrap().id;
            let e = block_on(engine.create_user(name)).unwrap().id;
            (m, e)
        });
        Self {
            dir,
            clock,
            engine: Some(engine),
            model,
            ids: HashMap::new(),
            last: HashMap::new(),
            users,
            counter: 0,
        }
    }

    fn e(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn map_mid(&self, m: MessageId) -> MessageId {
        MessageId {
            mailbox: self.ids[&m.mailbox],
            seq: m.seq,
        }
    }

    fn map_info(&self, mut i: MailboxInfo) -> MailboxInfo {
        i.id = self.ids[&i.id];
        if let Owner::User(u) = &mut i.owner {
            *u = self
                .users
                .iter()
                .find(|(m, _)| m == u)
                .map_or(*u, |(_, e)| *e);
        }
        i
    }

    fn apply(&mut self, op: &Op, ratio: f64) {
        match op {
            Op::Create {
                name,
                owner,
                ttl_ms,
                max,
            } => {
                let new = NewMailbox {
                    address: addr(NAMES[*name]),
                    owner: Owner::Anonymous {
                        token_hash: [*name as u8; 32],
                    },
                    expires_at_ms: self.clock.now_ms() + ttl_ms,
                    max_messages: *max,
                };
                let (mut for_model, mut for_engine) = (new.clone(), new);
                if let Some((m, e)) = owner.checked_sub(1).map(|u| self.users[u]) {
                    for_model.owner = Owner::User(m);
                    for_engine.owner = Owner::User(e);
                }
                let m = block_on(self.model.create_mailbox(for_model));
                let e = block_on(self.e().create_mailbox(for_engine));
                match (m, e) {
                    (Ok(m), Ok(e)) => {
                        self.ids.insert(m.id, e.id);
                        self.last.insert(*name, m.id);
                        assert_eq!(self.map_info(m), e);
                    }
                    (
                        Err(CreateMailboxError::AlreadyExists),
                        Err(CreateMailboxError::AlreadyExists),
                    ) => {}
                    (m, e) => panic!("create: model {m:?} engine {e:?}"),
                }
            }
            Op::CreateKey { user, hash } => {
                let (mu, eu) = self.users[*user];
                let prefix = format!("k{hash}");
                let m = block_on(self.model.create_api_key(mu, [*hash; 32], prefix.clone()));
                let e = block_on(self.e().create_api_key(eu, [*hash; 32], prefix));
                match (m, e) {
                    (Ok(m), Ok(e)) => assert_eq!((m.hash, m.prefix), (e.hash, e.prefix)),
                    (Err(m), Err(e)) => assert_eq!(format!("{m:?}"), format!("{e:?}")),
                    (m, e) => panic!("create key: model {m:?} engine {e:?}"),
                }
            }
            Op::Deliver { to, size, key } => {
                self.counter += 1;
                let d = Delivery {
                    raw: raw(*size, self.counter),
                    envelope_from: format!("s{}@x.test", self.counter),
                    recipients: to
                        .iter()
                        .map(|(n, tag)| {
                            let s = if *tag {
                                format!("{}+t{}@{DOMAIN}", NAMES[*n], n)
                            } else {
                                format!("{}@{DOMAIN}", NAMES[*n])
                            };
                            Recipient::parse(&s).unwrap()
                        })
                        .collect(),
                    dedupe_key: key.map(|k| format!("key-{k}")),
                };
                let m = block_on(self.model.deliver(d.clone())).unwrap();
                let e = block_on(self.e().deliver(d)).unwrap();
                match (m, e) {
                    (DeliveryOutcome::Duplicate, DeliveryOutcome::Duplicate) => {}
                    (
                        DeliveryOutcome::Delivered {
                            stored: ms,
                            refused: mr,
                        },
                        DeliveryOutcome::Delivered {
                            stored: es,
                            refused: er,
                        },
                    ) => {
                        let ms: Vec<_> = ms.into_iter().map(|i| self.map_mid(i)).collect();
                        assert_eq!(ms, es);
                        assert_eq!(mr, er);
                    }
                    (m, e) => panic!("deliver: model {m:?} engine {e:?}"),
                }
            }
            Op::DeleteMessage { name, nth } => {
                let Some(mid) = self.last.get(name).copied() else {
                    return;
                };
                let Ok(list) = self.model.list_messages(mid, 0, 100) else {
                    return;
                };
                let Some(msg) = list.get(*nth) else { return };
                let m = block_on(self.model.delete_message(msg.id));
                let e = block_on(self.e().delete_message(self.map_mid(msg.id)));
                assert_eq!(format!("{m:?}"), format!("{e:?}"));
            }
            Op::DeleteMailbox { name } => {
                let Some(mid) = self.last.get(name).copied() else {
                    return;
                };
                let m = block_on(self.model.delete_mailbox(mid));
                let e = block_on(self.e().delete_mailbox(self.ids[&mid]));
                assert_eq!(format!("{m:?}"), format!("{e:?}"));
            }
            Op::Advance { ms } => self.clock.advance(*ms),
            Op::Compact => {
                self.model.compact_now().unwrap();
                self.e().compact_now().unwrap();
            }
            Op::Reopen => {
                // A restart reaps expired mailboxes, as a compaction pass does.
                self.model.compact_now().unwrap();
                let e = self.engine.take().unwrap();
                e.shutdown();
                drop(e);
                self.engine = Some(
                    Engine::open_with_clock(
                        cfg(self.dir.path(), ratio),
                        self.clock.clone() as Arc<dyn Clock>,
                    )
                    .unwrap(),
                );
            }
        }
    }

    fn check(&self) {
        for name in NAMES {
            let a = addr(name);
            assert_eq!(
                self.model.mailbox(&a).map(|i| self.map_info(i)),
                self.e().mailbox(&a),
                "mailbox {name}"
            );
        }
        for (mid, eid) in &self.ids {
            let m = self.model.mailbox_by_id(*mid).map(|i| self.map_info(i));
            assert_eq!(m, self.e().mailbox_by_id(*eid));
            let ml = self.model.list_messages(*mid, 0, 1000);
            let el = self.e().list_messages(*eid, 0, 1000);
            match (ml, el) {
                (Ok(ml), Ok(el)) => {
                    let ml: Vec<_> = ml
                        .into_iter()
                        .map(|mut x| {
                            x.id = self.map_mid(x.id);
                            x
                        })
                        .collect();
                    assert_eq!(ml, el);
                    for x in &el {
                        let mid = MessageId {
                            mailbox: *mid,
                            seq: x.id.seq,
                        };
                        assert_eq!(
                            self.model.read_raw(mid).unwrap(),
                            self.e().read_raw(x.id).unwrap()
                        );
                        assert_eq!(self.e().message_meta(x.id).unwrap(), *x);
                    }
                    // Resume from the middle.
                    if let Some(mid_seq) = el.get(el.len() / 2).map(|x| x.id.seq) {
                        let tail = self.e().list_messages(*eid, mid_seq, 2).unwrap();
                        assert!(tail.iter().all(|x| x.id.seq > mid_seq) && tail.len() <= 2);
                    }
                }
                (Err(LookupError::NotFound), Err(LookupError::NotFound)) => {}
                (m, e) => panic!("list: model {m:?} engine {e:?}"),
            }
        }
        let owners = self
            .users
            .iter()
            .map(|(m, e)| (Owner::User(*m), Owner::User(*e)));
        let tokens = (0..NAMES.len()).map(|n| {
            let o = Owner::Anonymous {
                token_hash: [n as u8; 32],
            };
            (o.clone(), o)
        });
        for (m, e) in owners.chain(tokens) {
            let mut from_model: Vec<_> = self
                .model
                .mailboxes_owned_by(&m)
                .into_iter()
                .map(|i| self.map_info(i))
                .collect();
            let mut from_engine = self.e().mailboxes_owned_by(&e);
            from_model.sort_by_key(|i| i.id);
            from_engine.sort_by_key(|i| i.id);
            assert_eq!(from_model, from_engine, "mailboxes of {e:?}");
        }
        for (m, e) in self.users {
            let hashes =
                |keys: Vec<ApiKeyInfo>| keys.into_iter().map(|k| k.hash).collect::<Vec<_>>();
            assert_eq!(
                hashes(self.model.api_keys_of(m)),
                hashes(self.e().api_keys_of(e)),
                "keys of {e:?}"
            );
        }
        if let Err(e) = self.e().check_indexes_for_tests() {
            panic!("an index differs from a full scan: {e}");
        }
        let (ms, es) = (self.model.stats(), self.e().stats());
        assert_eq!(
            (ms.mailboxes, ms.messages, ms.users),
            (es.mailboxes, es.messages, es.users)
        );
        assert_eq!(es.corrupt_records, 0);
    }
}

fn run(ops: Vec<Op>, ratio: f64) {
    let mut w = World::new(ratio);
    for op in &ops {
        w.apply(op, ratio);
        w.check();
    }
    // Whatever happened, a final reopen sees the same state.
    w.apply(&Op::Reopen, ratio);
    w.check();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_in_memory_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, 0.5);
    }

    #[test]
    fn engine_matches_the_model_with_eager_compaction(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, 1.0);
    }
}

#[test]
fn regression_expired_then_compacted() {
    run(
        vec![
            Op::Create {
                name: 0,
                owner: 0,
                ttl_ms: 2000,
                max: 1,
            },
            Op::Advance { ms: 2000 },
            Op::Compact,
        ],
        0.5,
    );
}
