"""The seed service's client for Keygate's internal GitHub token endpoint, unchanged in spirit:
POST JSON to /api/github/tokens with the internal API key and either a repository id or the
organization and repository names, then read the fields of the answer.

Usage (as the integration test runs it):
    seed_client.py BASE_URL INTERNAL_KEY id REPOSITORY_ID
    seed_client.py BASE_URL INTERNAL_KEY names ORGANIZATION REPOSITORY
Prints one JSON object: {"status": <http status>, ...the fields read...}.
"""

import json
import sys

import requests


class GitHubTokenError(Exception):
    def __init__(self, status, body):
        super().__init__(f"token request failed with {status}")
        self.status = status
        self.body = body


def get_github_tokens(base_url, internal_api_key, repository_id=None,
                      organization_name=None, repository_name=None):
    payload = {"internalApiKey": internal_api_key}
    if repository_id is not None:
        payload["repositoryId"] = repository_id
    else:
        payload["organizationName"] = organization_name
        payload["repositoryName"] = repository_name
    response = requests.post(f"{base_url}/api/github/tokens", json=payload, timeout=30)
    if response.status_code != 200:
        raise GitHubTokenError(response.status_code, response.text)
    data = response.json()
    return {
        "github_app_token": data["githubAppToken"],
        "installation_token": data["installationToken"],
        "organization_name": data["organizationName"],
        "repository_name": data["repositoryName"],
    }


def main(argv):
    base_url, key, mode = argv[1], argv[2], argv[3]
    try:
        if mode == "id":
            result = get_github_tokens(base_url, key, repository_id=int(argv[4]))
        else:
            result = get_github_tokens(base_url, key, organization_name=argv[4],
                                       repository_name=argv[5])
        result["status"] = 200
    except GitHubTokenError as e:
        result = {"status": e.status}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
