//! `livekitservice.install`: the binary staged outside the ops lock
//! (fetch, verify, extract, within the install deadline), then committed
//! and reconciled with it held; and the install `start` makes when it needs
//! the binary.

use std::sync::Arc;

use hero_livekit_proto::{ErrorCode, Event, InstallParams, InstallResult};

use super::plan::Intent;
use super::reconcile::{Desired, Step};
use super::{install_error, period_from_env, LivekitService, DEFAULT_INSTALL_DEADLINE, DEFAULT_READY_TIMEOUT};
use crate::error::ServiceError;
use crate::install;
use crate::metrics::InstallOutcome;

impl LivekitService {
    /// `livekitservice.install`: the download and its verification run
    /// outside the ops lock, bounded by an overall deadline, so a slow mirror
    /// never holds up a heal; only the swap into place and the reconcile
    /// that follows take the lock.
    ///
    /// # Errors
    /// Invalid source/sha256, download or verification failure or the
    /// deadline (previous binary intact), write failure.
    pub async fn install(self: &Arc<Self>, p: InstallParams) -> Result<InstallResult, ServiceError> {
        self.run_to_completion(|s| async move {
            let _installing = s.installing.lock().await;
            let installed = async {
                let staged = s.stage_binary(&p).await?;
                let mut d = s.desired.lock().await;
                s.commit_binary(&mut d, staged).await
            }
            .await;
            s.count_install(&installed);
            installed
        })
        .await
    }

    fn count_install(&self, r: &Result<InstallResult, ServiceError>) {
        self.metrics.count_install(match r {
            Ok(r) if r.changed => InstallOutcome::Installed,
            Ok(_) => InstallOutcome::Unchanged,
            Err(_) => InstallOutcome::Failed,
        });
    }

    /// Where install progress goes: the event bus.
    fn install_progress(&self) -> impl FnMut(install::InstallProgress) + Send {
        let events = self.events.clone();
        move |pr: install::InstallProgress| {
            events.publish(Event::InstallProgress {
                phase: pr.phase.to_string(),
                bytes_done: pr.bytes_done,
                bytes_total: pr.bytes_total,
            })
        }
    }

    /// Fetches and verifies a binary without touching anything in place,
    /// within the install deadline (`HERO_LIVEKIT_INSTALL_DEADLINE_MS`).
    async fn stage_binary(&self, p: &InstallParams) -> Result<install::Staged, ServiceError> {
        let req = install::InstallRequest::from(p);
        let mut progress = self.install_progress();
        let deadline = period_from_env("HERO_LIVEKIT_INSTALL_DEADLINE_MS", DEFAULT_INSTALL_DEADLINE);
        let record = self.paths.install_record();
        let staging = install::stage(&req, &self.spec_paths.livekit_bin, &record, &mut progress);
        match tokio::time::timeout(deadline, staging).await {
            Ok(staged) => staged.map_err(install_error),
            Err(_) => Err(ServiceError::new(
                ErrorCode::InstallFailed,
                format!(
                    "the install did not complete within {} ms; the previous binary is intact",
                    deadline.as_millis()
                ),
            )
            .with_hint(
                "check the source and the network, or install from a local file with `hero_livekit install --source PATH`",
            )),
        }
    }

    /// Puts a staged binary in place and reconciles. Must hold `desired`.
    async fn commit_binary(&self, d: &mut Desired, staged: install::Staged) -> Result<InstallResult, ServiceError> {
        let livekit_bin = &self.spec_paths.livekit_bin;
        let outcome = match staged {
            install::Staged::Done(outcome) => outcome,
            install::Staged::Ready(ready) => {
                let mut progress = self.install_progress();
                install::commit(*ready, livekit_bin, &self.paths.install_record(), &mut progress)
                    .await
                    .map_err(install_error)?
            }
        };
        if outcome.changed {
            self.events.publish(Event::Installed {
                version: outcome.version.clone(),
                sha256: outcome.sha256.clone(),
            });
        }
        // Another version may read other keys: livekit.yaml is rendered for
        // the binary now in place, and the reconcile restarts livekit-server
        // onto it like after any change of its file.
        d.binary_stamp = None;
        let target = self.retarget_if_replaced(d).await;
        let step = Step {
            trigger: "install",
            target,
            intent: Intent::default(),
            timeout: DEFAULT_READY_TIMEOUT,
        };
        let mut r = self.reconcile(d, step).await?;
        if let Some(e) = r.failure(false) {
            return Err(e);
        }
        Ok(InstallResult {
            version: outcome.version,
            path: outcome.path.display().to_string(),
            sha256: outcome.sha256,
            source: outcome.source,
            changed: outcome.changed,
            warnings: outcome.warnings,
            heal: r.heal,
        })
    }

    /// An install by `start` (`update`, or a binary gone with a source
    /// known): `start` needs the binary before it can go on, so it fetches
    /// with the lock held, within the same deadline. Must hold `desired`.
    pub(super) async fn install_locked(
        &self,
        d: &mut Desired,
        p: &InstallParams,
    ) -> Result<InstallResult, ServiceError> {
        let installed = async {
            let staged = self.stage_binary(p).await?;
            self.commit_binary(d, staged).await
        }
        .await;
        self.count_install(&installed);
        installed
    }
}
