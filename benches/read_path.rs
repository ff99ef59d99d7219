//! The client's read path: `get_int` with a five-level scope over a replica
//! of 1,000,000 value rows, against a single `HashMap<String, i64>` lookup
//! measured in the same run.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use policy_values::client::PolicyClient;
use policy_values::domain::{Level, Scope, WriteScope};

const KEY: &str = "allocation.max_concurrent_per_user";
const ROWS: usize = 1_000_000;

/// 1,000,000 rows of one key: 400k users, 300k projects, 250k orgs,
/// 49,999 plans and the global value.
fn replica() -> PolicyClient {
    let mut builder = PolicyClient::fixed();
    let levels = [(Level::User, 400_000), (Level::Project, 300_000), (Level::Org, 250_000), (Level::Plan, 49_999)];
    for (level, count) in levels {
        for i in 0..count {
            let scope = WriteScope::at(level, &format!("{}-{i}", level.as_str())).unwrap();
            builder = builder.set(KEY, scope, (i % 10_000) as i64);
        }
    }
    let client = builder.set(KEY, WriteScope::global(), 77).build().unwrap();
    assert_eq!(client.health().rows, ROWS);
    client
}

fn reads(c: &mut Criterion) {
    let client = replica();
    // Ids that miss at every level but global: five probes, the worst case.
    let miss = Scope::new().user("user-x").project("project-x").org("org-x").plan("plan-x");
    // An id that hits at the first level.
    let hit = Scope::new().user("user-123").project("project-x").org("org-x").plan("plan-x");
    assert_eq!(client.get_int(&miss, KEY), Ok(77));
    assert_eq!(client.get_int(&hit, KEY), Ok(123));
    let handle = client.int_key(KEY).unwrap();

    let catalog: HashMap<String, i64> = policy_values::domain::Catalog::builtin()
        .unwrap()
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.key.to_string(), i as i64))
        .collect();

    let mut group = c.benchmark_group("read_path");
    group.bench_function("hashmap_string_i64_lookup", |b| b.iter(|| catalog.get(black_box(KEY)).copied()));
    group.bench_function("get_int_five_levels_all_miss_but_global", |b| {
        b.iter(|| client.get_int(black_box(&miss), black_box(KEY)))
    });
    group.bench_function("get_int_user_level_hit", |b| b.iter(|| client.get_int(black_box(&hit), black_box(KEY))));
    group.bench_function("int_handle_five_levels_all_miss_but_global", |b| b.iter(|| handle.get(black_box(&miss))));
    // What a request pays once, however many keys it reads: four ids copied
    // and hashed.
    group.bench_function("scope_build_four_ids", |b| {
        b.iter(|| {
            Scope::new()
                .user(black_box("user-x"))
                .project(black_box("project-x"))
                .org(black_box("org-x"))
                .plan(black_box("plan-x"))
        })
    });
    group.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
