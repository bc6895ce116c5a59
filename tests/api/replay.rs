//! The bundled real data, replayed over HTTP, ends at the stock computed
//! from the files alone.

use crate::both_backends;
use crate::helpers::{Backend, TestApp};
use skuwatch::replay::{self, ReplayOptions};

both_backends!(
    replaying_the_bundled_retail_data_ends_at_the_computed_stock,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let plan = replay::plan(&replay::bundled()).expect("plan");
        let options = ReplayOptions {
            server: app.base.clone(),
            speed: None,
            concurrency: 8,
            verify: true,
            token: app.token.clone(),
        };
        let report = replay::run(&plan, &options).await.expect("replay");
        eprintln!(
            "{backend:?} replay: {}",
            serde_json::to_string(&report).unwrap_or_default()
        );
        assert_eq!(report.failed, 0, "{:?}", report.mismatches);
        assert!(report.verified, "{:?}", report.mismatches);
        assert_eq!(report.skus, plan.expected_stock.len());
        // And the event log agrees with the computed stock, read independently.
        let stock = replay::read_stock(&app.client, &app.base)
            .await
            .expect("stock");
        for (sku, expected) in &plan.expected_stock {
            assert_eq!(stock.get(sku.as_str()), Some(expected), "{sku}");
        }
    }
);
