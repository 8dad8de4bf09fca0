//! Unit tests of the reconciler's wake.

use super::*;

#[tokio::test]
async fn requests_coalesce_into_one_pass_that_serves_them_all() {
    let w = Wake::default();
    w.request("boot", false);
    w.request("token_chain", true);
    w.drift();
    // One stored permit for the three requests.
    w.notify.notified().await;
    let p = w.take();
    assert_eq!(p.trigger, Some("boot"), "the first trigger names the pass");
    assert!(p.chain_refused && p.drift, "{p:?}");
    let again = tokio::time::timeout(Duration::from_millis(20), w.notify.notified()).await;
    assert!(again.is_err(), "no second pass for requests already served");
    let p = w.take();
    assert_eq!((p.trigger, p.drift, p.chain_refused), (None, false, false));
}

#[tokio::test]
async fn an_exit_asks_for_an_exits_only_pass_and_a_due_backoff_for_one_at_its_instant() {
    let w = Wake::default();
    w.exits("child");
    w.notify.notified().await;
    let p = w.take();
    assert_eq!((p.trigger, p.full), (Some("child"), false));
    w.exits("child");
    w.request("configure", false);
    let p = w.take();
    assert!(p.full, "any full request makes the pass full");
    let later = Instant::now() + Duration::from_secs(60);
    let sooner = Instant::now() + Duration::from_secs(1);
    w.due_at(later);
    w.due_at(sooner);
    w.due_at(later);
    assert_eq!(w.due(), Some(sooner), "the earliest wins");
    w.due_passed();
    assert_eq!(w.due(), None);
    assert_eq!(w.take().trigger, Some("backoff"));
}
