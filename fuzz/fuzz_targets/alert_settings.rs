//! The alert and inventory settings read from text: the routes line, the thresholds, a
//! webhook URL read from the vault and the `--expiring` span of `keyturn inventory`.
#![no_main]

use chrono::TimeDelta;
use keyturn::adapters::notify::WebhookUrl;
use keyturn::alerts::routes::{Channel, Route, parse_routes};
use keyturn::alerts::thresholds::{MAX_THRESHOLD_DAYS, Thresholds};
use keyturn::domain::inventory::parse_within;
use keyturn::domain::secret::SecretValue;
use keyturn_fuzz::now;
use libfuzzer_sys::fuzz_target;

/// A route written back as the setting spells it.
fn render(route: &Route) -> String {
    match &route.channel {
        Channel::Teams { secret } | Channel::Slack { secret } | Channel::CloudEvents { secret } => {
            format!("{}={}:{}", route.name, route.channel.kind(), secret)
        }
        Channel::Mail => format!("{}=mail", route.name),
    }
}

fn routes(text: &str) {
    let Ok(routes) = parse_routes(text) else {
        return;
    };
    for (index, route) in routes.iter().enumerate() {
        assert!(
            routes[..index].iter().all(|r| r.name != route.name),
            "a route name parsed twice: {text:?}"
        );
    }
    let rendered: Vec<String> = routes.iter().map(render).collect();
    assert_eq!(
        parse_routes(&rendered.join(";")).as_ref(),
        Ok(&routes),
        "routes re-rendered parse differently: {text:?}"
    );
}

fn thresholds(text: &str) {
    let Ok(thresholds) = Thresholds::parse(text) else {
        return;
    };
    // The same entries in the opposite order, each once, are the same thresholds.
    let mut entries: Vec<&str> = text.split(',').map(str::trim).collect();
    entries.reverse();
    entries.dedup();
    assert_eq!(
        Thresholds::parse(&entries.join(",")).as_ref(),
        Ok(&thresholds)
    );
    let horizon = thresholds.horizon();
    assert!(horizon >= TimeDelta::zero());
    assert!(horizon <= TimeDelta::days(i64::from(MAX_THRESHOLD_DAYS)));
    // A credential expiring past the horizon has crossed nothing; one expiring at the
    // horizon has crossed the furthest threshold; the crossed threshold tightens as the
    // expiry nears.
    let now = now();
    assert_eq!(
        thresholds.crossed(Some(now + horizon + TimeDelta::seconds(1)), now),
        None
    );
    if horizon > TimeDelta::zero() {
        assert_eq!(
            thresholds
                .crossed(Some(now + horizon), now)
                .map(|t| i64::from(t.days())),
            Some(horizon.num_days())
        );
    }
    let mut previous = u32::MAX;
    for days in (-1..=horizon.num_days()).rev() {
        if let Some(crossed) = thresholds.crossed(Some(now + TimeDelta::days(days)), now) {
            assert!(crossed.days() <= previous, "thresholds loosen: {text:?}");
            previous = crossed.days();
        }
    }
    assert_eq!(thresholds.crossed(None, now), None);
}

fn within(text: &str) {
    if let Ok(span) = parse_within(text) {
        assert!(span >= TimeDelta::zero());
        assert!(span <= TimeDelta::days(i64::from(MAX_THRESHOLD_DAYS)));
    }
}

fn webhook(text: &str) {
    if let Ok(url) = WebhookUrl::parse(&SecretValue::new(text)) {
        // The URL authorises posting: its Debug form never shows it.
        let shown = format!("{url:?}");
        assert!(!shown.contains("://"), "a webhook URL printed: {shown}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    routes(text);
    thresholds(text);
    within(text);
    webhook(text);
});
