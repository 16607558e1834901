//! User flows in a real headless Chromium driven through chromedriver (thirtyfour).
//! Screenshots of every page visited land in `target/screenshots/`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::PgPool;
use thirtyfour::prelude::*;

use crate::helpers::{PASSWORD, TestApp};

/// chromedriver in its own process group with a private HOME/TMPDIR; dropping it kills
/// the whole group (killing chromedriver alone leaves Chromium running).
struct ChromeDriver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir =
                std::env::temp_dir().join(format!("billfold-chrome-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = Command::new("chromedriver")
                .arg("--port=0")
                .env("HOME", &dir)
                .env("TMPDIR", &dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver must be installed (script/bootstrap --browser)");
            let stdout = child.stdout.take().unwrap();
            let mut port = None;
            for line in BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .take(20)
            {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    port = rest.trim_end_matches('.').trim().parse().ok();
                    break;
                }
            }
            match port {
                Some(port) => return ChromeDriver { child, port, dir },
                None => {
                    last_error = "chromedriver did not report its port".into();
                    let _ = child.kill();
                }
            }
        }
        panic!("{last_error}");
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Browser {
    driver: WebDriver,
    _chromedriver: ChromeDriver,
    shots: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = ChromeDriver::start();
        let mut caps = DesiredCapabilities::chrome();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ] {
            caps.add_arg(arg).unwrap();
        }
        let profile = chromedriver.dir.join("profile");
        caps.add_arg(&format!("--user-data-dir={}", profile.display()))
            .unwrap();
        let driver = WebDriver::new(format!("http://127.0.0.1:{}", chromedriver.port), caps)
            .await
            .unwrap();
        driver
            .set_page_load_timeout(Duration::from_secs(20))
            .await
            .unwrap();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            _chromedriver: chromedriver,
            shots,
        }
    }

    /// Waits (up to 10 s) for an element: after a click that submits a form the URL may
    /// not change, so never look up the next page's element immediately.
    async fn wait_for(&self, css: &str) -> WebElement {
        self.driver
            .query(By::Css(css))
            .wait(Duration::from_secs(10), Duration::from_millis(100))
            .first()
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
    }

    /// Waits (up to 10 s) until an element matching `css` contains `text`. Polls by
    /// hand: htmx replaces the element while we look (stale references are retried).
    async fn wait_for_text(&self, css: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(found) = self.driver.find_all(By::Css(css)).await {
                for el in found {
                    if el.text().await.is_ok_and(|t| t.contains(text)) {
                        return;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} with text {text:?} never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body returning a boolean) in the page.
    async fn script_is_true(&self, script: &str) -> bool {
        self.driver
            .execute(script, Vec::new())
            .await
            .unwrap()
            .convert()
            .unwrap()
    }

    /// Waits (up to 15 s) until the JavaScript expression `expr` is true.
    async fn wait_until_true(&self, expr: &str) {
        let script = format!("return Boolean({expr});");
        for _ in 0..150 {
            if self.script_is_true(&script).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{expr} never became true");
    }

    async fn text_of(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    /// Reloads `url` until an element matching `css` contains `text` (up to 20 s):
    /// for state that arrives by webhook. Never panics on a missing element meanwhile.
    async fn reload_until(&self, url: &str, css: &str, text: &str) {
        for _ in 0..100 {
            self.driver.goto(url).await.unwrap();
            for el in self.driver.find_all(By::Css(css)).await.unwrap_or_default() {
                if el.text().await.is_ok_and(|t| t.contains(text)) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{css} never showed {text:?} at {url}");
    }

    /// Signs up through the form and waits for the dashboard.
    async fn sign_up(&self, base: &str, email: &str) {
        self.driver.goto(format!("{base}/signup")).await.unwrap();
        self.screenshot("signup").await;
        self.wait_for("#email")
            .await
            .send_keys(email)
            .await
            .unwrap();
        self.wait_for("#password")
            .await
            .send_keys(PASSWORD)
            .await
            .unwrap();
        self.wait_for("form[action='/signup'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        self.wait_for("#balance-total").await;
    }

    /// Screenshots the page at 1280 and 375 px wide (`{name}.png`, `{name}-375.png`),
    /// checks that it fits a 375 px screen (no horizontal page scroll: wide tables
    /// scroll inside their card) and checks it at both widths with axe-core (WCAG 2.1
    /// A and AA and axe's best practices, `region` included): no violation allowed.
    async fn screenshot(&self, name: &str) {
        // The CSP refuses inline styles: a page must not carry any (htmx injected one
        // until it was configured not to, and every page logged a violation).
        let inline_styles: i64 = self
            .driver
            .execute(
                "return document.querySelectorAll('style, [style]').length;",
                Vec::new(),
            )
            .await
            .unwrap()
            .convert()
            .unwrap();
        assert_eq!(
            inline_styles, 0,
            "{name}: inline styles, refused by the CSP"
        );
        self.driver
            .screenshot(&self.shots.join(format!("{name}.png")))
            .await
            .unwrap();
        self.driver.set_window_rect(0, 0, 375, 812).await.unwrap();
        self.driver
            .screenshot(&self.shots.join(format!("{name}-375.png")))
            .await
            .unwrap();
        // The page's width when it is wider than the screen, with the elements that
        // stick out (innermost first) to say why.
        let overflow: Vec<String> = self
            .driver
            .execute(
                "const root = document.documentElement;
                 if (root.clientWidth >= root.scrollWidth) return [];
                 const out = [String(root.scrollWidth)];
                 for (const el of document.body.querySelectorAll('*')) {
                   if (el.getBoundingClientRect().right > root.clientWidth + 1 && !(el.parentElement && el.parentElement.closest('.table-scroll'))
                       && ![...el.children].some(c => c.getBoundingClientRect().right > root.clientWidth + 1)) {
                     out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + String(el.className).split(' ').join('.') : ''));
                   }
                 }
                 return out.slice(0, 8);",
                Vec::new(),
            )
            .await
            .unwrap()
            .convert()
            .unwrap();
        assert!(
            overflow.is_empty(),
            "{name} is {overflow:?} px wide on a 375 px screen (width, then what sticks out)"
        );
        // Narrow, tables scroll: axe checks they can be reached by keyboard.
        self.assert_accessible(&format!("{name} at 375 px")).await;
        self.driver.set_window_rect(0, 0, 1280, 1000).await.unwrap();
        self.assert_accessible(name).await;
    }

    /// Screenshots the page at the window's current (phone) width as `{name}-375.png`
    /// and checks it with axe-core: for states only a phone shows (the open menu).
    async fn screenshot_at_phone_width(&self, name: &str) {
        self.driver
            .screenshot(&self.shots.join(format!("{name}-375.png")))
            .await
            .unwrap();
        self.assert_accessible(name).await;
    }

    /// Runs axe-core (vendored, pinned) on the current page; panics listing every
    /// violation.
    async fn assert_accessible(&self, name: &str) {
        const AXE: &str = include_str!("vendor/axe-4.14.1.min.js");
        self.driver.execute(AXE, Vec::new()).await.unwrap();
        let result = self
            .driver
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
                    .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' (' + v.nodes.map(n => n.target.join(' ')).join(', ') + ')')))
                    .catch(e => done(['axe failed: ' + e]));",
                Vec::new(),
            )
            .await
            .unwrap();
        let violations: Vec<String> = result.convert().unwrap();
        assert!(
            violations.is_empty(),
            "{name}: accessibility violations: {violations:#?}"
        );
    }
}

#[sqlx::test]
async fn a_customer_buys_a_pack_sees_balance_and_chart_and_a_refund_shows_the_debt(pool: PgPool) {
    tokio::time::timeout(Duration::from_secs(120), async {
        let app = TestApp::spawn(pool).await;
        let b = Browser::start().await;

        b.sign_up(&app.base, "grace@example.com").await;

        assert_eq!(b.text_of("#balance-total").await, "100 credits");
        b.screenshot("dashboard-new").await;

        b.wait_for("a[href='/billing/top-up'].button")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("button[data-pack='pack_500']").await;
        b.screenshot("top-up").await;
        b.wait_for("button[data-pack='pack_500']")
            .await
            .click()
            .await
            .unwrap();

        // Stripe's (sandbox) hosted checkout page.
        let pay = b.wait_for("form[action$='/pay'] button[type=submit]").await;
        let page = b.driver.source().await.unwrap();
        assert!(page.contains("€40.00"), "checkout shows the pack's price");
        b.screenshot("sandbox-checkout").await;
        pay.click().await.unwrap();

        // Back on billfold: the success page updates itself when the webhook lands.
        b.wait_for_text("#top-up-status h1", "Credits added").await;
        assert!(b.text_of("#top-up-status").await.contains("600"));
        b.screenshot("top-up-success").await;

        // The product reports usage: 30 credits come out of the plan credits first.
        let ws = app.workspace_of("grace@example.com").await;
        let key = {
            let mut tx = app.db.begin().await.unwrap();
            let key = billfold::api_keys::create(&mut tx, ws, None, "Backend", None)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            key
        };
        for _ in 0..3 {
            let body = serde_json::json!({"feature": "graph.query", "quantity": 10});
            assert_eq!(
                app.consume(&key.plaintext, body).await.0,
                reqwest::StatusCode::OK
            );
        }

        b.driver
            .goto(format!("{}/dashboard", app.base))
            .await
            .unwrap();
        assert_eq!(b.text_of("#balance-total").await, "510 credits");
        assert_eq!(b.text_of("#balance-plan").await, "10");
        assert_eq!(b.text_of("#balance-purchased").await, "500");
        let chart = b.wait_for("#usage-chart svg title").await;
        assert_eq!(
            chart.inner_html().await.unwrap(),
            "Credits used per day, last 30 days"
        );
        assert!(
            b.text_of("#recent-entries")
                .await
                .contains("Top-up: 500 credits")
        );
        b.screenshot("dashboard-after-top-up").await;

        b.driver
            .goto(format!("{}/credits", app.base))
            .await
            .unwrap();
        b.wait_for("#statement").await;
        b.screenshot("statement").await;
        b.driver
            .goto(format!("{}/settings/api-keys", app.base))
            .await
            .unwrap();
        b.wait_for("#name").await;
        b.screenshot("api-keys").await;
        assert_eq!(app.assert_ledger_consistent(ws).await, (10, 500));

        // 310 more credits used, then the 500-credit top-up is refunded: what is left
        // of it (200) is taken back, the 300 already spent become a debt the pages show.
        let body = serde_json::json!({"feature": "manager.process", "quantity": 310});
        assert_eq!(
            app.consume(&key.plaintext, body).await.0,
            reqwest::StatusCode::OK
        );
        let session: String = sqlx::query_scalar(
            "select stripe_checkout_session_id from top_ups where workspace_id = $1",
        )
        .bind(ws)
        .fetch_one(&app.db)
        .await
        .unwrap();
        crate::refunds::refund(&app, &session, None).await;
        b.driver
            .goto(format!("{}/dashboard", app.base))
            .await
            .unwrap();
        b.wait_for_text("#debt-notice", "owes 300 credits").await;
        assert_eq!(b.text_of("#balance-total").await, "0 credits");
        b.screenshot("dashboard-debt").await;
        b.wait_for("#debt-notice a[href='/billing/top-up']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#debt-notice", "owes 300 credits").await;
        assert!(
            b.driver
                .find_all(By::Css("#debt-notice a"))
                .await
                .unwrap()
                .is_empty(),
            "the top-up page does not link to itself"
        );
        b.screenshot("top-up-debt").await;
        assert_eq!(app.balance(ws).await.debt, 300);
        assert_eq!(app.assert_ledger_consistent(ws).await, (0, 0));
        b.driver.clone().quit().await.unwrap();
    })
    .await
    .expect("browser flow timed out");
}

#[sqlx::test]
async fn a_customer_subscribes_cancels_in_the_portal_and_is_back_on_free_after_the_period(
    pool: PgPool,
) {
    tokio::time::timeout(Duration::from_secs(120), async {
        let app = TestApp::spawn(pool).await;
        let key = secrecy::SecretString::from(billfold::sandbox::SANDBOX_SECRET_KEY);
        let stripe =
            billfold::stripe::StripeClient::new(&key, Some(&format!("{}/sandbox/", app.base)))
                .unwrap();
        billfold::catalog::sync::sync(&app.db, &stripe)
            .await
            .unwrap();
        let b = Browser::start().await;

        b.sign_up(&app.base, "lin@example.com").await;
        b.wait_for("#balance-total").await;
        let ws = app.workspace_of("lin@example.com").await;
        crate::api::grant_purchased(&app, ws, 250).await;

        b.driver
            .goto(format!("{}/billing", app.base))
            .await
            .unwrap();
        b.wait_for("[data-plan=pro] button").await;
        b.screenshot("billing-free").await;
        b.wait_for("[data-plan=pro] button")
            .await
            .click()
            .await
            .unwrap();
        let pay = b.wait_for("form[action$='/pay'] button[type=submit]").await;
        assert!(b.driver.source().await.unwrap().contains("€49.00"));
        b.screenshot("sandbox-checkout-subscription").await;
        pay.click().await.unwrap();

        // Back from Checkout: "payment received", and the page updates itself to the
        // active plan when the webhook lands.
        b.wait_for("#subscribed-status").await;
        b.wait_for_text("#subscribed-status h1", "You are on Pro")
            .await;
        b.screenshot("subscribed").await;
        let billing = format!("{}/billing", app.base);
        b.reload_until(&billing, "#invoices", "€49.00").await;
        assert_eq!(b.text_of("#current-plan-name").await, "Pro");
        b.screenshot("billing-pro").await;

        // Upgrade to Business after seeing Stripe's preview in the htmx dialog.
        b.wait_for("button[data-upgrade=business]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#change-preview #confirm-change").await;
        // A real modal: focus moves in, Esc closes it, the page is as it was.
        assert!(
            b.script_is_true(
                "const d = document.querySelector('#change-preview');
                 return d.matches(':modal') && d.contains(document.activeElement);"
            )
            .await,
            "the upgrade preview is a modal dialog holding the focus"
        );
        b.driver
            .active_element()
            .await
            .unwrap()
            .send_keys(Key::Escape)
            .await
            .unwrap();
        b.wait_until_true("document.querySelector('#change-preview') === null")
            .await;
        b.wait_for("button[data-upgrade=business]")
            .await
            .click()
            .await
            .unwrap();
        let confirm = b.wait_for("#change-preview #confirm-change").await;
        assert!(
            b.text_of("#change-preview")
                .await
                .to_lowercase()
                .contains("due now")
        );
        b.screenshot("upgrade-preview").await;
        confirm.click().await.unwrap();
        b.wait_for_text(".flash", "Upgraded to Business").await;
        assert_eq!(b.text_of("#current-plan-name").await, "Business");

        // Schedule a downgrade back to Pro for the period end.
        b.wait_for("form[action='/billing/downgrade'] input[value=pro] + button")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#scheduled-downgrade", "Moves to Pro")
            .await;
        b.screenshot("billing-downgrade-scheduled").await;

        b.wait_for("#open-portal").await.click().await.unwrap();
        let cancel = b
            .wait_for("form[action*='/sandbox/portal/'][action$='/cancel'] button")
            .await;
        b.screenshot("sandbox-portal").await;
        cancel.click().await.unwrap();
        b.wait_for("form[action*='/sandbox/portal/'][action$='/resume'] button")
            .await;
        b.wait_for("a.checkout-back").await.click().await.unwrap();
        b.reload_until(&billing, "#current-plan", "Cancels on")
            .await;

        // The sandbox clock moves past the period end.
        b.driver
            .goto(format!("{}/sandbox/clock", app.base))
            .await
            .unwrap();
        b.screenshot("sandbox-clock").await;
        b.wait_for("form[action$='/clock/advance'] button")
            .await
            .click()
            .await
            .unwrap();
        // The form posts and comes back to the clock page; then look at billfold.
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.wait_for("form[action$='/clock/advance']").await;
        b.reload_until(&billing, "#current-plan-name", "Free").await;
        assert_eq!(b.text_of("#current-plan-name").await, "Free");
        b.screenshot("billing-back-to-free").await;
        b.driver
            .goto(format!("{}/dashboard", app.base))
            .await
            .unwrap();
        assert_eq!(
            b.text_of("#balance-purchased").await,
            "250",
            "purchased credits survive"
        );
        assert_eq!(b.text_of("#balance-plan").await, "100");
        assert_eq!(app.assert_ledger_consistent(ws).await, (100, 250));
        b.driver.clone().quit().await.unwrap();
    })
    .await
    .expect("browser flow timed out");
}

#[sqlx::test]
async fn a_referred_customer_pays_and_the_reseller_follows_commissions_to_a_paid_payout(
    pool: PgPool,
) {
    tokio::time::timeout(Duration::from_secs(180), async {
        let app = TestApp::spawn(pool).await;
        let key = secrecy::SecretString::from(billfold::sandbox::SANDBOX_SECRET_KEY);
        let stripe =
            billfold::stripe::StripeClient::new(&key, Some(&format!("{}/sandbox/", app.base)))
                .unwrap();
        billfold::catalog::sync::sync(&app.db, &stripe)
            .await
            .unwrap();
        let (_owner, partner) = crate::resellers::reseller_with_owner(&app, "acme").await;
        // Small payouts, so this flow's few euros are paid out.
        sqlx::query(
            "update resellers set minimum_payout_minor = 100, display_name = 'Acme Partners',
                    accent_color = '#0f766e' where reseller_id = $1",
        )
        .bind(partner)
        .execute(&app.db)
        .await
        .unwrap();
        let b = Browser::start().await;

        // A visitor follows the referral link, lands on sign-up and signs up.
        b.driver.goto(format!("{}/r/acme", app.base)).await.unwrap();
        b.wait_for("form[action='/signup']").await;
        b.sign_up(&app.base, "grace@example.com").await;
        assert!(b.text_of("#partner-brand").await.contains("Acme Partners"));
        let ws = app.workspace_of("grace@example.com").await;

        // Buys a credit pack...
        b.driver
            .goto(format!("{}/billing/top-up", app.base))
            .await
            .unwrap();
        b.wait_for("button[data-pack='pack_500']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("form[action$='/pay'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#top-up-status h1", "Credits added").await;
        // ...and a plan.
        let billing = format!("{}/billing", app.base);
        b.driver.goto(&billing).await.unwrap();
        b.wait_for("[data-plan=pro] button")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("form[action$='/pay'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#subscribed-status h1", "You are on Pro")
            .await;
        b.reload_until(&billing, "#invoices", "€49.00").await;
        b.driver
            .goto(format!("{}/dashboard", app.base))
            .await
            .unwrap();
        b.wait_for("#partner-sharing").await;
        b.screenshot("dashboard-referred").await;

        // The reseller signs in and lands on its dashboard: the click, the sign-up, two
        // pending commissions (20 % of €40.00 and of €49.00) and today's revenue.
        b.wait_for("form[action='/logout'] button")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#email").await.send_keys("owner@acme.test").await.unwrap();
        b.wait_for("#password").await.send_keys(PASSWORD).await.unwrap();
        b.wait_for("form[action='/login'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#referral-link").await;
        // The funnel's table sits in a closed <details>: read its cells' content.
        for cell in ["#clicks-all", "#signups-all", "#paying-all"] {
            let el = b.wait_for(cell).await;
            assert_eq!(el.inner_html().await.unwrap(), "1", "{cell}");
        }
        let funnel = b.wait_for("#funnel-chart svg").await.inner_html().await.unwrap();
        assert!(funnel.contains("Signed up"), "{funnel:.300}");
        assert_eq!(b.text_of("#pending-eur").await, "€17.80");
        assert_eq!(b.text_of("#approved-eur").await, "€0.00");
        let link = b
            .wait_for("#referral-link")
            .await
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        assert!(link.ends_with("/r/acme"), "{link}");
        b.screenshot("reseller-overview").await;
        // The chart's range switch (htmx swaps the chart only).
        b.wait_for("a[href='/reseller?range=12m']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#revenue-chart figcaption", "last 12 months")
            .await;
        let title = b.wait_for("#revenue-chart svg title").await;
        assert!(title.inner_html().await.unwrap().contains("per month"));
        b.driver
            .goto(format!("{}/reseller/commissions?status=pending", app.base))
            .await
            .unwrap();
        b.wait_for("#commissions").await;
        assert_eq!(
            b.driver
                .find_all(By::Css("#commissions tbody tr"))
                .await
                .unwrap()
                .len(),
            2
        );
        b.screenshot("reseller-commissions").await;
        b.driver
            .goto(format!("{}/reseller/customers", app.base))
            .await
            .unwrap();
        assert!(b.text_of("#customers").await.contains("g***@example.com"));
        b.screenshot("reseller-customers").await;
        b.driver
            .goto(format!("{}/reseller/settings", app.base))
            .await
            .unwrap();
        b.wait_for("#brand-preview").await;
        b.screenshot("reseller-settings").await;

        // The sandbox clock passes the hold period: approved, then a payout is drafted.
        crate::billing::advance_days(&app, 31).await;
        app.settle().await;
        let run_jobs = || async {
            let mut tx = app.app_db.begin().await.unwrap();
            let now = billfold::database::stripe_now(&mut tx, true).await.unwrap();
            billfold::resellers::commissions::approve_due(&mut tx, now)
                .await
                .unwrap();
            let drafted = billfold::resellers::commissions::draft_payouts(&mut tx, now)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            drafted
        };
        let first = run_jobs().await;
        assert_eq!(first.len(), 1);
        let payout_url = format!("{}/reseller/payouts/{}", app.base, first[0]);
        b.driver.goto(&payout_url).await.unwrap();
        assert_eq!(b.text_of("#payout-status").await, "On its way");
        assert_eq!(b.text_of("h1").await, "Payout of €17.80");
        // The CSV, as the browser downloads it.
        let csv: String = b
            .driver
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(document.querySelector('a[href$=\"/csv\"]').href).then(r => r.text()).then(done);",
                Vec::new(),
            )
            .await
            .unwrap()
            .convert()
            .unwrap();
        assert_eq!(csv.lines().count(), 4, "header, two lines, total: {csv}");
        assert!(csv.lines().last().unwrap().contains(",1780,eur,"), "{csv}");

        // Marked paid (what `billfold payouts mark-paid` does): the reseller sees it.
        {
            let mut conn = app.app_db.acquire().await.unwrap();
            billfold::resellers::commissions::mark_paid(&mut conn, first[0], "SEPA-2026-12")
                .await
                .unwrap();
        }
        b.driver.goto(&payout_url).await.unwrap();
        assert!(b.text_of("#payout-status").await.starts_with("Paid"));
        b.screenshot("reseller-payout-paid").await;

        // The pack is refunded in the sandbox: a reversal appears, approved at once, and
        // the next payout is smaller by it.
        let session: String = sqlx::query_scalar(
            "select stripe_checkout_session_id from top_ups where workspace_id = $1",
        )
        .bind(ws)
        .fetch_one(&app.db)
        .await
        .unwrap();
        crate::refunds::refund(&app, &session, None).await;
        let commissions = format!("{}/reseller/commissions", app.base);
        b.reload_until(&commissions, "#commissions", "Refund of a top-up")
            .await;
        assert!(b.text_of("#commissions").await.contains("-€8.00"));
        crate::billing::advance_days(&app, 31).await;
        app.settle().await;
        let second = run_jobs().await;
        assert_eq!(second.len(), 1);
        b.driver
            .goto(format!("{}/reseller/payouts/{}", app.base, second[0]))
            .await
            .unwrap();
        // The first renewal (€9.80) less the clawback (€8.00).
        assert_eq!(b.text_of("h1").await, "Payout of €1.80");
        assert!(b.text_of("#payout-lines").await.contains("-€8.00"));
        b.screenshot("reseller-payout-clawback").await;
        b.driver
            .goto(format!("{}/reseller/payouts", app.base))
            .await
            .unwrap();
        b.wait_for("#payouts").await;
        b.screenshot("reseller-payouts").await;
        b.driver.goto(format!("{}/reseller", app.base)).await.unwrap();
        b.wait_for("#referral-link").await;
        assert_eq!(b.text_of("#paid-eur").await, "€17.80");
        b.screenshot("reseller-overview-later").await;
        b.driver.clone().quit().await.unwrap();
    })
    .await
    .expect("browser flow timed out");
}

#[sqlx::test]
async fn the_demo_resellers_first_look_is_a_living_dashboard(pool: PgPool) {
    tokio::time::timeout(Duration::from_secs(120), async {
        let app = TestApp::spawn(pool).await;
        let hasher =
            billfold::accounts::password::PasswordHasher::new(2, std::time::Duration::from_secs(5));
        assert!(billfold::demo::seed(&app.app_db, &hasher).await.unwrap());
        let b = Browser::start().await;
        b.driver.goto(format!("{}/login", app.base)).await.unwrap();
        b.wait_for("#email")
            .await
            .send_keys("reseller@billfold.test")
            .await
            .unwrap();
        b.wait_for("#password")
            .await
            .send_keys("billfold-demo")
            .await
            .unwrap();
        b.wait_for("form[action='/login'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        // Sign-in lands on the reseller dashboard, with figures in every state.
        b.wait_for("#referral-link").await;
        for figure in ["#pending-eur", "#approved-eur", "#paid-eur"] {
            let shown = b.text_of(figure).await;
            assert!(
                shown.starts_with('€') && shown != "€0.00",
                "{figure}: {shown}"
            );
        }
        let chart = b
            .wait_for("#revenue-chart svg")
            .await
            .inner_html()
            .await
            .unwrap();
        assert!(chart.matches("<rect").count() > 5, "bars on the chart");
        b.screenshot("demo-reseller-overview").await;
        b.driver
            .goto(format!("{}/reseller?range=12m", app.base))
            .await
            .unwrap();
        b.wait_for("#revenue-chart").await;
        b.screenshot("demo-reseller-12-months").await;
        // The charts themselves (below the fold of the page screenshots).
        for (css, name) in [
            ("#revenue-chart", "demo-reseller-chart"),
            ("#funnel-chart", "demo-reseller-funnel"),
        ] {
            let el = b.wait_for(css).await;
            el.scroll_into_view().await.unwrap();
            el.screenshot(&b.shots.join(format!("{name}.png")))
                .await
                .unwrap();
        }
        for (path, table, name) in [
            (
                "/reseller/customers",
                "#customers",
                "demo-reseller-customers",
            ),
            (
                "/reseller/commissions",
                "#commissions",
                "demo-reseller-commissions",
            ),
            ("/reseller/payouts", "#payouts", "demo-reseller-payouts"),
        ] {
            b.driver.goto(format!("{}{path}", app.base)).await.unwrap();
            b.wait_for(table).await;
            b.screenshot(name).await;
        }
        // A customer's own page, from the customer list.
        b.driver
            .goto(format!("{}/reseller/customers", app.base))
            .await
            .unwrap();
        b.wait_for("#customers tbody tr td a")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#customer-commissions").await;
        b.screenshot("demo-reseller-customer").await;
        b.driver
            .goto(format!("{}/reseller/payouts", app.base))
            .await
            .unwrap();
        let commissions = b.text_of("#payouts").await;
        assert!(commissions.contains("Paid"), "{commissions}");
        b.driver.clone().quit().await.unwrap();
    })
    .await
    .expect("browser flow timed out");
}

#[sqlx::test]
async fn staff_adjusts_credits_approves_commissions_pays_a_payout_and_replays_an_event(
    pool: PgPool,
) {
    tokio::time::timeout(Duration::from_secs(180), async {
        let app = TestApp::spawn(pool).await;
        let customer = app.visitor();
        let ws = customer.sign_up("grace@example.com").await;
        let (_owner, partner) = crate::resellers::reseller_with_owner(&app, "acme").await;
        sqlx::query(
            "insert into commissions (reseller_id, workspace_id, kind, source, source_id, base_minor,
                                      rate_bps, amount_minor, currency, status, earned_at,
                                      approve_after, paid_minor)
             select $1, $2, 'commission', 'top_up', 'cs_browser_' || i, 4000, 2000, 800, 'eur',
                    'pending', now(), now() + interval '30 days', 4000
               from generate_series(1, 8) i",
        )
        .bind(partner)
        .bind(ws)
        .execute(&app.db)
        .await
        .unwrap();
        // A webhook event whose job gave up (say Postgres was away for its attempts).
        sqlx::query(
            "insert into stripe_events (stripe_event_id, event_type, livemode, payload)
             values ('evt_browser_failed', 'customer.updated', false,
                     '{\"id\": \"evt_browser_failed\", \"type\": \"customer.updated\", \"object\": \"event\"}');
             ",
        )
        .execute(&app.db)
        .await
        .unwrap();
        sqlx::query(
            "insert into jobs (kind, key, status, attempts, max_attempts, last_error, finished_at)
             values ('stripe_event', 'evt_browser_failed', 'failed', 15, 15,
                     'connection refused', now())",
        )
        .execute(&app.db)
        .await
        .unwrap();
        app.visitor().sign_up("staff@example.com").await;
        sqlx::query("update users set is_staff = true where email = 'staff@example.com'")
            .execute(&app.db)
            .await
            .unwrap();

        let b = Browser::start().await;
        b.driver.goto(format!("{}/login", app.base)).await.unwrap();
        b.wait_for("#email").await.send_keys("staff@example.com").await.unwrap();
        b.wait_for("#password").await.send_keys(PASSWORD).await.unwrap();
        b.wait_for("form[action='/login'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#balance-total").await;
        b.driver.goto(format!("{}/admin", app.base)).await.unwrap();
        b.wait_for("#conversion").await;
        b.screenshot("admin-overview").await;

        // Finds the customer by email and adjusts their credits, confirming the password.
        b.driver
            .goto(format!("{}/admin/workspaces", app.base))
            .await
            .unwrap();
        b.wait_for("#q").await.send_keys("grace@").await.unwrap();
        b.wait_for("form[role=search] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#result-count", "1 workspace").await;
        b.screenshot("admin-workspaces").await;
        b.wait_for("#rows tbody tr td a").await.click().await.unwrap();
        b.wait_for("#adjust-form").await;
        b.wait_for("#credits").await.send_keys("250").await.unwrap();
        b.wait_for("#reason")
            .await
            .send_keys("Goodwill for the outage")
            .await
            .unwrap();
        b.wait_for("#adjust-password")
            .await
            .send_keys(PASSWORD)
            .await
            .unwrap();
        b.screenshot("admin-workspace").await;
        b.wait_for("#adjust-form button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text(".flash", "Adjusted by 250 credits").await;
        b.wait_for_text("#ledger", "Goodwill for the outage").await;
        let (_, statement) = customer.get_html("/credits").await;
        assert!(statement.html().contains("Adjustment: Goodwill for the outage"));

        // Finds the adjustment in the audit log.
        b.driver
            .goto(format!("{}/admin/audit-log", app.base))
            .await
            .unwrap();
        b.wait_for("#f-action").await.send_keys("credits_adjusted").await.unwrap();
        b.wait_for("form[role=search] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#rows", "workspace.credits_adjusted").await;
        assert!(b.text_of("#rows").await.contains("staff@example.com"));
        b.screenshot("admin-audit-log").await;

        // Approves the pending commissions in bulk, with a confirmation step.
        b.driver
            .goto(format!("{}/admin/commissions?f.status=pending", app.base))
            .await
            .unwrap();
        b.wait_for("#rows").await;
        for checkbox in b.driver.find_all(By::Css("#rows input[type=checkbox]")).await.unwrap() {
            checkbox.click().await.unwrap();
        }
        b.screenshot("admin-commissions").await;
        b.wait_for("#bulk-form button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text("#confirm-summary", "8 rows").await;
        b.screenshot("admin-bulk-confirm").await;
        b.wait_for("#confirm-bulk").await.click().await.unwrap();
        b.wait_for_text(".flash", "8 of 8 selected commissions approved").await;

        // Drafts the payout and marks it paid.
        b.driver
            .goto(format!("{}/admin/payouts", app.base))
            .await
            .unwrap();
        b.wait_for("form[action='/admin/payouts/draft'] button")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for_text(".flash", "1 payouts drafted").await;
        b.wait_for("#rows tbody tr td a").await.click().await.unwrap();
        b.wait_for("#reference").await.send_keys("SEPA-2026-12-001").await.unwrap();
        b.wait_for("#mark-paid-form button").await.click().await.unwrap();
        b.wait_for_text(".flash", "Payout marked paid").await;
        assert!(b.text_of("#fields").await.contains("SEPA-2026-12-001"));
        b.screenshot("admin-payout").await;

        // Replays the failed webhook event: the job runs again and applies it.
        b.driver
            .goto(format!("{}/admin/webhook-events?f.status=failed", app.base))
            .await
            .unwrap();
        b.wait_for("#rows tbody tr td a").await.click().await.unwrap();
        b.wait_for("#payload").await;
        b.wait_for("#replay").await.click().await.unwrap();
        b.wait_for_text(".flash", "Queued to run again").await;
        b.reload_until(
            &format!("{}/admin/webhook-events/evt_browser_failed", app.base),
            "#fields",
            "applied",
        )
        .await;
        b.screenshot("admin-webhook-event").await;

        // Every other back-office page, looked at on a laptop and a phone.
        let grace: uuid::Uuid =
            sqlx::query_scalar("select user_id from users where email = 'grace@example.com'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        for (path, name, marker) in [
            ("/admin/adjustments".to_owned(), "admin-approvals", "#no-pending"),
            ("/admin/resellers/new".to_owned(), "admin-reseller-new", "#new-reseller-form"),
            (format!("/admin/resellers/{partner}"), "admin-reseller", "#terms-form"),
            (format!("/admin/users/{grace}"), "admin-user", "#fields"),
            ("/admin/plans/pro".to_owned(), "admin-plan", "#plan-edit-form"),
            ("/admin/credit-packs/pack_500".to_owned(), "admin-credit-pack", "#pack-edit-form"),
            ("/admin/features/manager.process".to_owned(), "admin-feature", "#feature-form"),
            ("/admin/jobs".to_owned(), "admin-jobs", "#rows"),
            ("/admin/workspaces/not-a-workspace".to_owned(), "admin-not-found", "#error-back"),
        ] {
            b.driver.goto(format!("{}{path}", app.base)).await.unwrap();
            b.wait_for(marker).await;
            b.screenshot(name).await;
        }

        // Opens the customer's portal read-only and leaves it.
        b.driver
            .goto(format!("{}/admin/workspaces/{ws}", app.base))
            .await
            .unwrap();
        b.wait_for("#view-as").await.click().await.unwrap();
        b.wait_for_text("#view-as-banner", "grace's workspace").await;
        b.wait_for("#balance-total").await;
        b.screenshot("admin-view-as").await;
        b.wait_for("#view-as-banner button").await.click().await.unwrap();
        b.wait_for_text(".flash", "Customer view ended").await;
        b.driver.quit().await.unwrap();
    })
    .await
    .expect("the back-office flow finished in time");
}

#[sqlx::test]
async fn a_customer_watches_usage_live_on_the_dashboard_and_explores_it_by_range(pool: PgPool) {
    tokio::time::timeout(Duration::from_secs(120), async {
        let app = TestApp::spawn(pool).await;
        app.lift_rate_limits().await;
        let b = Browser::start().await;
        // Prices in plain sight before signing up.
        b.driver.goto(format!("{}/pricing", app.base)).await.unwrap();
        assert!(b.text_of("#feature-costs").await.contains("Graph query"));
        b.screenshot("pricing-public").await;
        b.sign_up(&app.base, "maya@example.com").await;

        // A key from the API keys page, shown once.
        b.driver
            .goto(format!("{}/settings/api-keys", app.base))
            .await
            .unwrap();
        b.wait_for("#name").await.send_keys("Backend").await.unwrap();
        b.wait_for("form[action='/settings/api-keys'] button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        let key = b.text_of("#new-key-value").await;

        // The dashboard follows usage without a reload: a marker set on the page
        // survives while the figures change.
        b.driver
            .goto(format!("{}/dashboard", app.base))
            .await
            .unwrap();
        assert_eq!(b.text_of("#quota-percent").await, "0 %");
        b.driver
            .execute("window.notReloaded = true;", Vec::new())
            .await
            .unwrap();
        for i in 0..28 {
            let feature = if i % 2 == 0 { "graph.query" } else { "risk.score" };
            let quality = if i == 0 { "pro" } else { "standard" };
            let (status, body) = app
                .consume(
                    &key,
                    serde_json::json!({"feature": feature, "quality": quality, "idempotency_key": format!("live-{i}")}),
                )
                .await;
            assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        }
        // 14 × 3 + 14 × 2 + 3 (the first call at pro): 73 of 100 credits.
        b.wait_until_true(
            "document.querySelector('#quota-percent')?.textContent === '73 %'",
        )
        .await;
        assert!(b.script_is_true("return window.notReloaded === true;").await);
        assert_eq!(b.text_of("#balance-total").await, "27 credits");
        assert!(b.text_of("#run-out").await.contains("credits last until about"));
        b.screenshot("dashboard-live").await;

        // The phone menu: collapsed behind a button, opened and closed with Esc.
        b.driver.set_window_rect(0, 0, 375, 812).await.unwrap();
        assert!(!b.wait_for("#main-nav").await.is_displayed().await.unwrap());
        let menu = b.wait_for(".menu-toggle").await;
        menu.click().await.unwrap();
        assert!(b.wait_for("#main-nav").await.is_displayed().await.unwrap());
        assert_eq!(menu.attr("aria-expanded").await.unwrap().as_deref(), Some("true"));
        b.screenshot_at_phone_width("dashboard-menu-open").await;
        b.driver
            .active_element()
            .await
            .unwrap()
            .send_keys(Key::Escape)
            .await
            .unwrap();
        assert!(!b.wait_for("#main-nav").await.is_displayed().await.unwrap());
        b.driver.set_window_rect(0, 0, 1280, 1000).await.unwrap();

        // The usage page: a range switch swaps the report in place and updates the
        // address; the history names the feature and the quality.
        b.wait_for("#main-nav a[href='/usage']")
            .await
            .click()
            .await
            .unwrap();
        assert_eq!(b.text_of("#usage-credits").await, "73");
        b.driver
            .execute("window.notReloaded = true;", Vec::new())
            .await
            .unwrap();
        b.wait_for(".range a[href='/usage?range=7']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_until_true(
            "document.querySelector(\".range a[aria-current]\")?.textContent === '7 days'",
        )
        .await;
        assert!(b.script_is_true("return window.notReloaded === true;").await);
        assert!(b.driver.current_url().await.unwrap().as_str().ends_with("/usage?range=7"));
        assert_eq!(b.text_of("#usage-credits").await, "73");
        let history = b.text_of("#usage-events").await;
        assert!(history.contains("Graph query") && history.contains("Pro ×2"), "{history}");
        b.screenshot("usage").await;
        // A custom range that cannot be shown says why.
        b.driver
            .goto(format!("{}/usage?from=2026-12-31&to=2026-01-01", app.base))
            .await
            .unwrap();
        assert!(b.text_of("#range-error").await.contains("must not be after"));
        b.screenshot("usage-bad-range").await;
        // Limits against use, and the plans compared from inside the portal.
        b.driver.goto(format!("{}/limits", app.base)).await.unwrap();
        assert!(b.text_of("#limit-allowance").await.contains("73 of 100 credits used"));
        b.screenshot("limits").await;
        b.driver.goto(format!("{}/pricing", app.base)).await.unwrap();
        assert!(b.text_of("[data-plan=free] h2").await.contains("Your plan"));
        b.screenshot("pricing").await;
        // The workspace's time zone: saved, and times then read in it.
        b.driver.goto(format!("{}/settings", app.base)).await.unwrap();
        b.screenshot("settings").await;
        b.wait_for("#time_zone option[value='Europe/Berlin']")
            .await
            .click()
            .await
            .unwrap();
        b.wait_for("#save-settings").await.click().await.unwrap();
        b.wait_for_text(".flash", "Europe/Berlin").await;
        // Revoking a key asks first; keeping it changes nothing, confirming revokes it.
        b.driver
            .goto(format!("{}/settings/api-keys", app.base))
            .await
            .unwrap();
        b.wait_for("#api-keys button.danger").await.click().await.unwrap();
        assert!(b.text_of("#confirm-h").await.contains("Revoke the key “Backend”?"));
        b.screenshot("api-key-revoke-confirm").await;
        b.wait_for("#confirm-back").await.click().await.unwrap();
        b.wait_for_text("#api-keys", "Active").await;
        b.wait_for("#api-keys button.danger").await.click().await.unwrap();
        b.wait_for("#confirm-action").await.click().await.unwrap();
        b.wait_for_text(".flash", "API key revoked").await;
        assert!(b.text_of("#api-keys").await.contains("Revoked"));
        b.driver.clone().quit().await.unwrap();
    })
    .await
    .expect("browser flow timed out");
}
