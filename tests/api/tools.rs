//! Tool runs: the registry, continuation of threads, streaming upstreams, limits.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::backends::every_backend;
use crate::support::upstream::{self, hanging};

fn webhook_tool(url: &str, path: &str, extra: &str) -> String {
    format!("[[tools]]\nname = \"hook\"\nkind = \"http\"\nurl = \"{url}{path}\"\n{extra}\n")
}

async fn run(app: &TestApp, tool: &str, body: Value) -> crate::support::TestResponse {
    app.post_json(&format!("/v1/tools/{tool}/runs"), &body).await
}

#[tokio::test]
async fn the_registry_lists_echo_and_the_configured_tools() {
    let upstream = upstream::start().await;
    let app = TestApp::with_tools(
        &webhook_tool(&upstream.url, "/webhook", "timeout_secs = 7\nmax_concurrency = 3"),
        &[],
    )
    .await;
    let tools = app.get("/v1/tools").await.json();
    assert_eq!(tools["data"][0]["name"], "echo");
    let hook = &tools["data"][1];
    assert_eq!((hook["name"].as_str(), hook["kind"].as_str()), (Some("hook"), Some("http")));
    assert_eq!((hook["timeout_secs"].as_u64(), hook["max_concurrency"].as_u64()), (Some(7), Some(3)));
    run(&app, "nope", json!({"input": "x"})).await.assert_problem(StatusCode::NOT_FOUND, "tool_not_found");
}

#[tokio::test]
async fn echo_starts_a_thread_and_records_both_turns() {
    let app = TestApp::new().await;
    let response = run(&app, "echo", json!({"input": "hello"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let finished = response.json();
    assert_eq!(
        (finished["status"].as_str(), finished["output"].as_str()),
        (Some("completed"), Some("hello"))
    );
    assert_eq!(finished["turns_remaining"], 18);
    assert!(finished["duration_ms"].as_i64().is_some());
    let thread =
        app.get(&format!("/v1/threads/{}", finished["continuation_id"].as_str().unwrap())).await.json();
    assert_eq!(thread["tool_name"], "echo");
    let turns: Vec<(&str, &str)> = thread["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["role"].as_str().unwrap(), t["content"].as_str().unwrap()))
        .collect();
    assert_eq!(turns, [("user", "hello"), ("assistant", "hello")]);
    assert_eq!(thread["turns"][1]["tool_name"], "echo");

    let stored = app.get(&format!("/v1/runs/{}", finished["id"].as_str().unwrap())).await.json();
    assert_eq!(stored, finished);
    for bad in [
        json!({}),
        json!({"input": ""}),
        json!({"input": "x", "timeout_secs": 0}),
        json!({"input": "x", "tools": 1}),
    ] {
        run(&app, "echo", bad).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test]
async fn a_run_may_shorten_its_tools_timeout_but_not_lengthen_it() {
    let upstream = upstream::start().await;
    let app = TestApp::with_tools(&webhook_tool(&upstream.url, "/webhook", "timeout_secs = 7"), &[]).await;
    let longer = run(&app, "hook", json!({"input": "x", "timeout_secs": 8})).await;
    longer.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(longer.json()["detail"].as_str().unwrap().contains("timeout_secs"), "{}", longer.text());
    assert_eq!(upstream.received.count(), 0, "a refused run calls nothing");
    for (asked, given) in [(json!(3), 3), (json!(7), 7), (json!(null), 7)] {
        let finished = run(&app, "hook", json!({"input": "x", "timeout_secs": asked})).await;
        assert_eq!(finished.status, StatusCode::OK, "{}", finished.text());
        assert_eq!(finished.json()["timeout_secs"], given);
    }
}

#[tokio::test]
async fn a_continuation_sends_the_history_and_appends_only_on_success() {
    let upstream = upstream::start().await;
    let registry = format!(
        "{}\n[[tools]]\nname = \"broken\"\nkind = \"http\"\nurl = \"{}/broken\"\n",
        webhook_tool(&upstream.url, "/webhook", ""),
        upstream.url
    );
    let app = TestApp::with_tools(&registry, &[]).await;
    let thread = app.create_thread(json!({"title": "ongoing"})).await;
    app.append(&thread, "first question").await;
    app.post_json(
        &format!("/v1/threads/{thread}/turns"),
        &json!({"role": "assistant", "content": "first answer"}),
    )
    .await;

    let done = run(&app, "hook", json!({"input": "second question", "continuation_id": thread})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.json()["output"], "seen: second question");
    assert_eq!(done.json()["turns_remaining"], 16);
    let sent = upstream.received.last();
    assert_eq!(sent["input"], "second question");
    assert_eq!(
        sent["history"],
        json!([{"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"}])
    );
    assert_eq!(app.get(&format!("/v1/threads/{thread}")).await.json()["turn_count"], 4);

    let failed = run(&app, "broken", json!({"input": "third", "continuation_id": thread})).await;
    failed.assert_problem(StatusCode::BAD_GATEWAY, "tool_failed");
    let run_id = failed.json()["run_id"].as_str().unwrap().to_owned();
    let record = app.get(&format!("/v1/runs/{run_id}")).await.json();
    assert_eq!(record["status"], "failed");
    assert!(record["error"].as_str().unwrap().contains("HTTP 500"), "{record}");
    assert_eq!(app.get(&format!("/v1/threads/{thread}")).await.json()["turn_count"], 4, "nothing appended");
}

#[tokio::test]
async fn a_thread_without_room_for_two_turns_is_refused_before_the_upstream_is_called() {
    let upstream = upstream::start().await;
    let registry = webhook_tool(&upstream.url, "/webhook", "");
    let app = TestApp::with_tools(&registry, &[("MAX_CONVERSATION_TURNS", "3")]).await;
    let thread = app.create_thread(json!({})).await;
    app.append(&thread, "one").await;
    app.append(&thread, "two").await;
    let refused = run(&app, "hook", json!({"input": "three", "continuation_id": thread})).await;
    refused.assert_problem(StatusCode::CONFLICT, "turn_limit_reached");
    assert_eq!(upstream.received.count(), 0);
    let missing = uuid::Uuid::new_v4();
    let unknown = run(&app, "hook", json!({"input": "x", "continuation_id": missing})).await;
    unknown.assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
}

/// Three turns of a million bytes: more than the 2 MiB a history may hold. A history
/// read and a run's continuation both get the newest two, and say so.
#[tokio::test]
async fn a_long_conversation_is_cut_to_its_newest_turns() {
    let upstream = upstream::start().await;
    let app = TestApp::with_tools(&webhook_tool(&upstream.url, "/webhook", ""), &[]).await;
    let parent = app.create_thread(json!({"title": "long"})).await;
    for label in ["1", "2"] {
        app.append(&parent, &label.repeat(1_000_000)).await;
    }
    let child = app.create_thread(json!({"parent_id": parent})).await;
    app.append(&child, &"3".repeat(1_000_000)).await;

    let response = app.get(&format!("/v1/threads/{child}/history")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let history = response.json();
    assert_eq!(history["thread_ids"], json!([parent, child]));
    let firsts: Vec<&str> =
        history["turns"].as_array().unwrap().iter().map(|t| &t["content"].as_str().unwrap()[..1]).collect();
    assert_eq!(firsts, ["2", "3"], "the newest turns, oldest first, across threads");
    assert_eq!((history["total_turns"].as_u64(), history["omitted_turns"].as_u64()), (Some(3), Some(1)));
    assert_eq!(history["truncated"], true);

    let done = run(&app, "hook", json!({"input": "summarize", "continuation_id": child})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let sent = upstream.received.last();
    let sent: Vec<&str> =
        sent["history"].as_array().unwrap().iter().map(|t| &t["content"].as_str().unwrap()[..1]).collect();
    assert_eq!(sent, ["2", "3"], "a run sends the same bounded history");
}

#[tokio::test]
async fn an_openai_stream_is_forwarded_as_deltas() {
    let upstream = upstream::start().await;
    let registry = format!(
        "[[tools]]\nname = \"glm\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"TEST_LLM_KEY\"\n\
         model = \"test-model\"\nsystem_prompt = \"Be brief.\"\nstream = true\n",
        upstream.url
    );
    let app = TestApp::with_tools(&registry, &[("TEST_LLM_KEY", "sk-test-123")]).await;
    let thread = app.create_thread(json!({})).await;
    app.append(&thread, "earlier").await;
    let accepted =
        run(&app, "glm", json!({"input": "greet me", "continuation_id": thread, "wait": false})).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted.header("location"), Some(format!("/v1/runs/{id}").as_str()));

    let events = app.events(&format!("/v1/runs/{id}/events")).await;
    let deltas: Vec<&str> =
        events.iter().filter(|e| e.0 == "delta").map(|e| e.1["text"].as_str().unwrap()).collect();
    assert_eq!(deltas, ["Hel", "lo", " world"]);
    let (last, finished, _) = events.last().unwrap();
    assert_eq!((last.as_str(), finished["output"].as_str()), ("completed", Some("Hello world")));

    assert_eq!(upstream.received.authorizations.lock().unwrap()[0].as_deref(), Some("Bearer sk-test-123"));
    let messages = &upstream.received.last()["messages"];
    assert_eq!(
        *messages,
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "earlier"},
            {"role": "user", "content": "greet me"}
        ])
    );
    let thread = app.get(&format!("/v1/threads/{thread}")).await.json();
    let reply = &thread["turns"][2];
    assert_eq!(
        (reply["content"].as_str(), reply["model_name"].as_str()),
        (Some("Hello world"), Some("test-model-v2"))
    );
    assert_eq!(reply["model_provider"], "127.0.0.1");
}

#[tokio::test]
async fn a_full_queue_answers_429() {
    let upstream = hanging();
    let app =
        TestApp::with_tools(&webhook_tool(&upstream.url, "", "max_concurrency = 1\ntimeout_secs = 30"), &[])
            .await;
    for _ in 0..5 {
        assert_eq!(
            run(&app, "hook", json!({"input": "x", "wait": false})).await.status,
            StatusCode::ACCEPTED
        );
    }
    let refused = run(&app, "hook", json!({"input": "x", "wait": false})).await;
    refused.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // One runs and four wait; the first one's `running` is recorded on the side.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let queued = app.get("/v1/runs?tool=hook&status=queued").await.json();
        if queued["data"].as_array().unwrap().len() == 4 {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "{queued}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn upstream_secrets_stay_out_of_run_records() {
    let upstream = upstream::start().await;
    let registry = format!(
        "[[tools]]\nname = \"leaky\"\nkind = \"http\"\nurl = \"http://user:pw-s3cret@{}/broken?token=q-s3cret\"\n\
         headers = {{ \"x-token\" = \"h-s3cret\" }}\n",
        upstream.url.trim_start_matches("http://")
    );
    let app = TestApp::with_tools(&registry, &[]).await;
    let failed = run(&app, "leaky", json!({"input": "x"})).await;
    failed.assert_problem(StatusCode::BAD_GATEWAY, "tool_failed");
    let record = app.get(&format!("/v1/runs/{}", failed.json()["run_id"].as_str().unwrap())).await;
    for text in [failed.text(), record.text()] {
        assert!(text.contains("/broken") && !text.contains("s3cret"), "{text}");
    }
}

#[tokio::test]
async fn an_answer_no_store_can_keep_fails_the_run_and_its_record_stays_readable() {
    let upstream = upstream::start().await;
    for backend in every_backend().await {
        let data = tempfile::tempdir().unwrap();
        let tools = webhook_tool(&upstream.url, "/nul", "");
        let app = TestApp::with_tools_over(backend.app.store().clone(), &tools, &[], data);
        let failed = run(&app, "hook", json!({"input": "x"})).await;
        failed.assert_problem(StatusCode::BAD_GATEWAY, "tool_failed");
        let record = app.get(&format!("/v1/runs/{}", failed.json()["run_id"].as_str().unwrap())).await;
        assert_eq!(record.status, StatusCode::OK, "{}: {}", backend.name, record.text());
        let run = record.json();
        assert_eq!(
            (run["status"].as_str(), run["output"].as_str()),
            (Some("failed"), Some("a\u{FFFD}b")),
            "{}",
            backend.name
        );
    }
}

/// The port of an upstream's URL.
fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed() {
    let (origin, elsewhere) = (upstream::start().await, upstream::start().await);
    let away = |status: u16| format!("{}/away/{status}/{}", origin.url, port(&elsewhere.url));
    let registry = format!(
        "[[tools]]\nname = \"hook302\"\nkind = \"http\"\nurl = \"{}/webhook?token=q-s3cret\"\n\
         headers = {{ \"x-webhook-token\" = \"h-s3cret\" }}\n\
         [[tools]]\nname = \"hook307\"\nkind = \"http\"\nurl = \"{}/webhook?token=q-s3cret\"\n\
         headers = {{ \"x-webhook-token\" = \"h-s3cret\" }}\n\
         [[tools]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"TEST_LLM_KEY\"\n\
         model = \"m\"\n",
        away(302),
        away(307),
        away(308)
    );
    let app = TestApp::with_tools(&registry, &[("TEST_LLM_KEY", "sk-s3cret")]).await;
    for tool in ["hook302", "hook307", "llm"] {
        let answer = run(&app, tool, json!({"input": "private words"})).await;
        answer.assert_problem(StatusCode::BAD_GATEWAY, "tool_failed");
        assert!(answer.text().contains("HTTP 30") && !answer.text().contains("s3cret"), "{}", answer.text());
    }
    assert_eq!(origin.received.all_headers.lock().unwrap().len(), 3, "each tool reached its origin");
    let leaked = elsewhere.received.all_headers.lock().unwrap();
    assert!(leaked.is_empty(), "another origin was sent {leaked:?}");
    assert_eq!(elsewhere.received.count(), 0);
}

#[tokio::test]
async fn a_redirect_within_the_origin_keeps_body_and_headers_but_sends_no_referer() {
    let upstream = upstream::start().await;
    let registry = webhook_tool(
        &upstream.url,
        "/here/307/webhook?token=q-s3cret",
        "headers = { \"x-webhook-token\" = \"h-s3cret\" }",
    );
    let app = TestApp::with_tools(&registry, &[]).await;
    let answer = run(&app, "hook", json!({"input": "follow me"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["output"], "seen: follow me");
    let seen = upstream.received.all_headers.lock().unwrap();
    assert_eq!(seen.len(), 2, "the redirect, then the webhook");
    for headers in seen.iter() {
        assert_eq!(headers.get("x-webhook-token").unwrap(), "h-s3cret");
        assert!(headers.get("referer").is_none(), "{headers:?}");
    }
}
