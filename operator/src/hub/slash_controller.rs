//! The slashing loop (ADR 0023, ADR 0027): every [`TICK`], for each member of a pool with
//! `spec.verification.slash`, proposes a slash on its latest failed verdict when that verdict
//! proves cheating ([`slashing::next_step`]), and follows a proposed slash on chain until it is
//! executed (after the bond contract's appeal window), cancelled, or left to the referee on
//! appeal. The state is shown in `MemberCluster.status.slash`, applied under its own field manager
//! [`MANAGER`], with an Event and `gpufed_hub_slashes_total{pool,state}` per change.
//!
//! Exactly once, across restarts and leader changes: the chain is the record of intent. Before
//! proposing, the loop reads `getSlash(evidence)`; a slash found there (a proposal mined by this
//! or an earlier leader that did not live to write the status) is adopted, not proposed again. A
//! proposal sent but not mined when its leader died is replaced on the same nonce by the next
//! leader's (the transaction lane, ADR 0014), so at most one of the two is mined, and the contract
//! refuses a second proposal on the same evidence hash (`EvidenceAlreadyUsed`) in any case.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::B256;
use gpufed_crds::{GpuPool, MemberCluster, MemberSlash, SlashPhase, SlashShare, TokenAmount};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::error::{Error, Result};
use crate::hub::chain::{ChainClient, SlashRecord};
use crate::hub::compensation::tenant_shares;
use crate::hub::context::{Context, now, truncate};
use crate::hub::slashing::{self, ChainStep, Step};

/// How often the loop looks at every member of a slashing pool.
pub const TICK: Duration = Duration::from_secs(3);

/// Field manager of `MemberCluster.status.slash`.
pub const MANAGER: &str = "gpufed-hub-slashing";

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(TICK).await;
        let pools = ctx.stores.pools.state();
        for member in ctx.stores.members.state() {
            // A slash already proposed is followed to its end even if the pool turned `slash`
            // off meanwhile: its tokens are frozen, and only execution or cancellation frees them.
            let pending = member
                .status
                .as_ref()
                .and_then(|s| s.slash.as_ref())
                .is_some_and(|s| !s.phase.is_final());
            let Some(pool) = pools.iter().find(|p| {
                p.name_any() == member.spec.pool
                    && (pending
                        || p.spec
                            .verification
                            .as_ref()
                            .is_some_and(|v| v.slash.is_some()))
            }) else {
                continue;
            };
            if let Err(e) = member_pass(&ctx, &member, pool).await {
                tracing::warn!(member = %member.name_any(), error = %e, "slashing a member; retrying");
            }
        }
    }
}

async fn member_pass(ctx: &Context, member: &MemberCluster, pool: &GpuPool) -> Result<()> {
    match slashing::next_step(member) {
        Step::Nothing => Ok(()),
        Step::Propose(v) => propose(ctx, member, pool, &v).await,
        Step::Follow { evidence } => follow(ctx, member, pool, &evidence).await,
    }
}

fn evidence_hash(hex_sha: &str) -> Result<B256> {
    hex_sha.parse::<B256>().map_err(|e| {
        Error::Config(format!(
            "evidence sha256 {hex_sha:?} is not 32 bytes of hex: {e}"
        ))
    })
}

/// A record for `v`'s slash in `phase`.
fn record_for(
    v: &gpufed_crds::MemberVerification,
    phase: SlashPhase,
    message: String,
) -> MemberSlash {
    MemberSlash {
        phase,
        challenge: v.challenge.clone(),
        reason: v.reason.clone(),
        evidence_sha256: v.evidence_sha256.clone(),
        amount: None,
        tenants: vec![],
        executable_at: None,
        propose_tx: None,
        execute_tx: None,
        message: truncate(&message, 1024),
        time: now(),
    }
}

/// Fills `s` from the chain's record of the slash.
fn from_chain(s: &mut MemberSlash, r: &SlashRecord) {
    s.amount = Some(r.amount);
    s.executable_at = Some(r.executable_at);
    s.tenants = r
        .tenants
        .iter()
        .filter_map(|(a, amount)| {
            a.to_string().parse().ok().map(|payer| SlashShare {
                payer,
                amount: *amount,
            })
        })
        .collect();
}

async fn propose(
    ctx: &Context,
    member: &MemberCluster,
    pool: &GpuPool,
    v: &gpufed_crds::MemberVerification,
) -> Result<()> {
    let name = member.name_any();
    let Some(policy) = pool
        .spec
        .verification
        .as_ref()
        .and_then(|x| x.slash.as_ref())
    else {
        return Ok(());
    };
    // The schema refuses `slash` without a bond contract; a pool stored before that rule, or
    // edited around it, still gets a clear answer instead of silence.
    if pool
        .spec
        .chain
        .as_ref()
        .and_then(|c| c.bond.as_ref())
        .is_none()
    {
        return not_slashed(
            ctx,
            member,
            pool,
            v,
            " but the pool names no bond contract (spec.chain.bond): nothing can be slashed",
        )
        .await;
    }
    let Some(provider) = member.spec.wallet.as_ref() else {
        return not_slashed(
            ctx,
            member,
            pool,
            v,
            " but the member names no wallet (spec.wallet): no bond to slash",
        )
        .await;
    };
    let chain = ctx.chain(pool).await?;
    let evidence = evidence_hash(&v.evidence_sha256)?;
    if let Some(r) = chain.slash_record(evidence).await? {
        // Proposed before (by this hub or a leader that died before writing the status).
        return adopt(ctx, member, pool, v, &r, None).await;
    }
    let Some(bond) = chain.bond_of(provider).await? else {
        return Err(Error::Config(
            "the pool's chain client has no bond contract".into(),
        ));
    };
    let Some(amount) = slashing::slash_amount(policy.amount, bond.bonded, bond.unbonding) else {
        let why = format!(" but provider {provider} has nothing bonded or unbonding");
        return not_slashed(ctx, member, pool, v, &why).await;
    };
    let harmed = slashing::harmed(
        ctx.stores.every_job().iter(),
        &name,
        provider,
        v.last_passed_time.as_ref(),
        &v.time,
    );
    let tenants = tenant_shares(amount, &harmed);
    let proposal = crate::hub::chain::SlashProposal {
        provider: provider.clone(),
        evidence_hash: evidence,
        amount,
        tenants: tenants.clone(),
    };
    match chain.propose_slash(&proposal).await? {
        Ok(mined) => {
            let r = chain.slash_record(evidence).await?.ok_or_else(|| {
                Error::Chain(format!(
                    "slash {evidence} proposed in {} but not readable",
                    mined.tx
                ))
            })?;
            adopt(ctx, member, pool, v, &r, Some(mined.tx)).await
        }
        Err(refusal) => {
            let said = refusal.to_string();
            if said.contains("EvidenceAlreadyUsed") {
                // Mined meanwhile (a replaced transaction of a previous leader): adopt it next pass.
                return Err(Error::Chain(format!(
                    "slash {evidence}: {said}; reading it again"
                )));
            }
            let why = format!("; the bond contract refused a slash of {amount}: {said}");
            not_slashed(ctx, member, pool, v, &why).await
        }
    }
}

/// Records that the failed verdict `v` leads to no slash: `challenge <name> failed (<reason>)`
/// followed by `why`.
async fn not_slashed(
    ctx: &Context,
    member: &MemberCluster,
    pool: &GpuPool,
    v: &gpufed_crds::MemberVerification,
    why: &str,
) -> Result<()> {
    let msg = format!("{} ({}){why}", slashing::what_failed(v), v.reason);
    write(
        ctx,
        member,
        pool,
        record_for(v, SlashPhase::NotSlashed, msg),
    )
    .await
}

/// Writes the slash found on chain for `v` (just proposed, or proposed before).
async fn adopt(
    ctx: &Context,
    member: &MemberCluster,
    pool: &GpuPool,
    v: &gpufed_crds::MemberVerification,
    r: &SlashRecord,
    tx: Option<String>,
) -> Result<()> {
    let phase = match slashing::chain_step(r.state, r.executable_at, 0) {
        ChainStep::Wait(p) | ChainStep::Done(p) => p,
        ChainStep::Execute => SlashPhase::Upheld,
    };
    let msg = if phase == SlashPhase::Proposed {
        format!(
            "{} ({}): slash of {} proposed with evidence sha256 {} to {} \
             tenant(s), the rest to the treasury; executable from unix time {} unless the \
             provider appeals",
            slashing::what_failed(v),
            v.reason,
            r.amount,
            v.evidence_sha256,
            r.tenants.len(),
            r.executable_at
        )
    } else {
        format!(
            "{} ({}): the slash of {} on evidence sha256 {} was proposed \
             earlier and is now {}",
            slashing::what_failed(v),
            v.reason,
            r.amount,
            v.evidence_sha256,
            slashing::phase_word(phase)
        )
    };
    let mut s = record_for(v, phase, msg);
    from_chain(&mut s, r);
    s.propose_tx = tx;
    write(ctx, member, pool, s).await
}

/// Follows the slash on record: executes it when due, shows appeals and outcomes.
async fn follow(
    ctx: &Context,
    member: &MemberCluster,
    pool: &GpuPool,
    evidence: &str,
) -> Result<()> {
    let Some(mut s) = member.status.as_ref().and_then(|x| x.slash.clone()) else {
        return Ok(());
    };
    let chain: Arc<ChainClient> = ctx.chain(pool).await?;
    let hash = evidence_hash(evidence)?;
    let Some(r) = chain.slash_record(hash).await? else {
        s.phase = SlashPhase::NotSlashed;
        s.message = format!(
            "the bond contract has no slash on evidence sha256 {evidence} (the chain or contract \
             changed?): nothing more is done"
        );
        s.time = now();
        return write(ctx, member, pool, s).await;
    };
    from_chain(&mut s, &r);
    let unix = u64::try_from(now().0.as_second()).unwrap_or(0);
    match slashing::chain_step(r.state, r.executable_at, unix) {
        ChainStep::Wait(p) if p == s.phase => Ok(()),
        ChainStep::Wait(p) => {
            s.phase = p;
            s.message = match p {
                SlashPhase::Appealed => format!(
                    "the provider appealed the slash on evidence sha256 {evidence}: the bond \
                     contract's referee decides (lapses in the provider's favour if undecided)"
                ),
                _ => s.message.clone(),
            };
            s.time = now();
            write(ctx, member, pool, s).await
        }
        ChainStep::Done(p) => {
            s.phase = p;
            s.message = match p {
                SlashPhase::Executed => format!(
                    "slash of {} on evidence sha256 {evidence} executed (by someone else): \
                     tenants and treasury paid",
                    r.amount
                ),
                _ => format!(
                    "slash on evidence sha256 {evidence} cancelled (withdrawn, dismissed on \
                     appeal or lapsed): the tokens went back to the provider's bond"
                ),
            };
            s.time = now();
            write(ctx, member, pool, s).await
        }
        ChainStep::Execute => match chain.execute_slash(hash).await? {
            Ok(mined) => {
                s.phase = SlashPhase::Executed;
                s.execute_tx = Some(mined.tx.clone());
                s.message = format!(
                    "slash of {} on evidence sha256 {evidence} executed: {} paid to {} tenant(s), \
                     the rest to the treasury",
                    r.amount,
                    total(&r.tenants),
                    r.tenants.len()
                );
                s.time = now();
                write(ctx, member, pool, s).await
            }
            // Not executable yet by the chain's clock, or executed meanwhile: read again next pass.
            Err(refusal) => Err(Error::Chain(format!(
                "executing the slash on {evidence}: {refusal}"
            ))),
        },
    }
}

fn total(tenants: &[(alloy::primitives::Address, TokenAmount)]) -> TokenAmount {
    TokenAmount::from_atto(tenants.iter().map(|(_, a)| a.atto()).sum())
}

/// Applies `s` as `status.slash`, with an Event and the metric.
async fn write(
    ctx: &Context,
    member: &MemberCluster,
    pool: &GpuPool,
    s: MemberSlash,
) -> Result<()> {
    let name = member.name_any();
    let body = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": name},
        "status": {"slash": s},
    });
    Api::<MemberCluster>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!("writing the slash on {name}")))?;
    let word = slashing::phase_word(s.phase);
    ctx.metrics
        .slashes
        .with_label_values(&[&pool.name_any(), word])
        .inc();
    let warning = !matches!(s.phase, SlashPhase::Cancelled);
    let reason = match s.phase {
        SlashPhase::NotSlashed => "NotSlashed".to_string(),
        _ => format!("Slash{word}"),
    };
    ctx.event(member, warning, &reason, "Slash", s.message.clone());
    tracing::info!(member = %name, evidence = %s.evidence_sha256, state = word,
        tx = ?s.execute_tx.as_ref().or(s.propose_tx.as_ref()), "slash state changed");
    Ok(())
}
