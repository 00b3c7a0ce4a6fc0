//! JSON bodies in the shapes GitHub's REST API description documents (users, repositories,
//! installations, the App itself, error bodies), built from the fake's state.

use serde_json::{Value, json};

/// GitHub's "Basic Error" body.
pub(crate) fn basic_error(message: &str, documentation_url: &str, status: u16) -> Value {
    json!({ "message": message, "documentation_url": documentation_url, "status": status.to_string() })
}

/// GitHub's "Validation Error" body (422).
pub(crate) fn validation_error(message: &str, documentation_url: &str) -> Value {
    json!({ "message": message, "documentation_url": documentation_url, "errors": [], "status": "422" })
}

/// A "Simple User" (also used for organizations as installation accounts).
pub(crate) fn simple_user(api: &str, web: &str, login: &str, id: u64, kind: &str) -> Value {
    let u = format!("{api}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcnt{id}"),
        "avatar_url": format!("{web}/avatars/u/{id}"),
        "gravatar_id": "",
        "url": u,
        "html_url": format!("{web}/{login}"),
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": kind,
        "site_admin": false,
        "user_view_type": "public"
    })
}

/// A "Repository" as GitHub lists it in an installation token response.
pub(crate) fn repository(
    api: &str,
    web: &str,
    owner: &Value,
    owner_login: &str,
    name: &str,
    id: u64,
) -> Value {
    let full = format!("{owner_login}/{name}");
    let u = format!("{api}/repos/{full}");
    let host = web
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    json!({
        "id": id,
        "node_id": format!("MDEwOlJlcG9zaXRvcnl{id}"),
        "name": name,
        "full_name": full,
        "owner": owner,
        "private": true,
        "html_url": format!("{web}/{full}"),
        "description": null,
        "fork": false,
        "url": u,
        "archive_url": format!("{u}/{{archive_format}}{{/ref}}"),
        "assignees_url": format!("{u}/assignees{{/user}}"),
        "blobs_url": format!("{u}/git/blobs{{/sha}}"),
        "branches_url": format!("{u}/branches{{/branch}}"),
        "collaborators_url": format!("{u}/collaborators{{/collaborator}}"),
        "comments_url": format!("{u}/comments{{/number}}"),
        "commits_url": format!("{u}/commits{{/sha}}"),
        "compare_url": format!("{u}/compare/{{base}}...{{head}}"),
        "contents_url": format!("{u}/contents/{{+path}}"),
        "contributors_url": format!("{u}/contributors"),
        "deployments_url": format!("{u}/deployments"),
        "downloads_url": format!("{u}/downloads"),
        "events_url": format!("{u}/events"),
        "forks_url": format!("{u}/forks"),
        "git_commits_url": format!("{u}/git/commits{{/sha}}"),
        "git_refs_url": format!("{u}/git/refs{{/sha}}"),
        "git_tags_url": format!("{u}/git/tags{{/sha}}"),
        "git_url": format!("git://{host}/{full}.git"),
        "issue_comment_url": format!("{u}/issues/comments{{/number}}"),
        "issue_events_url": format!("{u}/issues/events{{/number}}"),
        "issues_url": format!("{u}/issues{{/number}}"),
        "keys_url": format!("{u}/keys{{/key_id}}"),
        "labels_url": format!("{u}/labels{{/name}}"),
        "languages_url": format!("{u}/languages"),
        "merges_url": format!("{u}/merges"),
        "milestones_url": format!("{u}/milestones{{/number}}"),
        "notifications_url": format!("{u}/notifications{{?since,all,participating}}"),
        "pulls_url": format!("{u}/pulls{{/number}}"),
        "releases_url": format!("{u}/releases{{/id}}"),
        "ssh_url": format!("git@{host}:{full}.git"),
        "stargazers_url": format!("{u}/stargazers"),
        "statuses_url": format!("{u}/statuses/{{sha}}"),
        "subscribers_url": format!("{u}/subscribers"),
        "subscription_url": format!("{u}/subscription"),
        "tags_url": format!("{u}/tags"),
        "teams_url": format!("{u}/teams"),
        "trees_url": format!("{u}/git/trees{{/sha}}"),
        "clone_url": format!("{web}/{full}.git"),
        "mirror_url": null,
        "hooks_url": format!("{u}/hooks"),
        "svn_url": format!("{web}/{full}"),
        "homepage": null,
        "language": null,
        "forks_count": 0,
        "forks": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 0,
        "default_branch": "main",
        "open_issues_count": 0,
        "open_issues": 0,
        "is_template": false,
        "topics": [],
        "has_issues": true,
        "has_projects": false,
        "has_wiki": false,
        "has_pages": false,
        "has_downloads": true,
        "archived": false,
        "disabled": false,
        "visibility": "private",
        "pushed_at": "2026-01-01T00:00:00Z",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "license": null
    })
}
