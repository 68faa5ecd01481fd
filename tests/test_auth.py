"""CPR_AUTH=google: Google's credentials admitted by the allow list, everything else refused.

Google's token information and signing-key endpoints are stood in for by a loopback
server (google_stand_in) that the function is pointed at by its settings.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import EXAMPLES, IRIS, FunctionProcess, free_port, iris_expected
from google_stand_in import GoogleStandIn, Key

ALICE, BOB = "alice@example.com", "bob@example.com"
ROBOT = "robot@my-project.iam.gserviceaccount.com"
V1 = "/v1/projects/my-project/models/default/versions/v1:predict"


@pytest.fixture(scope="module")
def google():
    stand_in = GoogleStandIn()
    yield stand_in
    stand_in.stop()


def _env(google: GoogleStandIn, tmp) -> dict[str, str]:
    return {
        "CPR_CACHE_DIR": str(tmp / "cache"),
        "CPR_AUTH": "google",
        "CPR_ALLOWED_PRINCIPALS": f"user:{ALICE}, serviceAccount:{ROBOT}, domain:example.org",
        "CPR_AUTH_TOKENINFO_URL": f"{google.url}/tokeninfo",
        "CPR_AUTH_CERTS_URL": f"{google.url}/certs",
        "K_SERVICE": "iris-fn",  # what Cloud Run sets: the function's name
    }


@pytest.fixture(scope="module")
def guarded(google, tmp_path_factory):
    """The bundled example behind CPR_AUTH=google, for the whole module."""
    tmp = tmp_path_factory.mktemp("auth")
    fn = FunctionProcess(_env(google, tmp), tmp / "function.log").start()
    yield fn
    fn.stop()


def _post(fn, token: str | None = None, path: str = "/", header: str | None = None):
    headers = {"Authorization": header or f"Bearer {token}"} if (token or header) else {}
    return requests.post(fn.url + path, json={"instances": IRIS}, headers=headers, timeout=60)


def _entries(log: str) -> list[dict]:
    """The function's JSON log lines (gunicorn's own lines are skipped)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


EXPECTED = {"predictions": iris_expected(EXAMPLES / "model", IRIS)}


def test_no_credential_is_a_401_that_says_what_to_send(guarded):
    answer = _post(guarded)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "requires a Google credential" in answer.json()["error"]
    on_v1 = _post(guarded, path=V1)
    assert on_v1.status_code == 401
    assert on_v1.json()["error"]["status"] == "UNAUTHENTICATED"
    assert requests.get(guarded.url + "/", timeout=30).status_code == 401


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer two tokens"])
def test_a_malformed_authorization_header_is_a_401(guarded, header):
    answer = _post(guarded, header=header)
    assert answer.status_code == 401
    assert "must be 'Bearer TOKEN'" in answer.json()["error"]


def test_the_health_check_needs_no_credential(guarded):
    answer = requests.get(guarded.url + "/health", timeout=30)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    # Only that route: a model or version named health is not open.
    for path in ("/v1/projects/p/models/health", "/v1/projects/p/models/default/versions/health"):
        assert requests.get(guarded.url + path, timeout=30).status_code == 401


def test_an_allowed_access_token_is_admitted_and_its_email_logged(google, guarded):
    token = google.access_token(ALICE)
    answer = _post(guarded, token)
    assert (answer.status_code, answer.json()) == (200, EXPECTED)
    assert _post(guarded, google.access_token(ROBOT), path=V1).json() == EXPECTED
    assert _post(guarded, google.access_token("carol@example.org")).json() == EXPECTED
    guarded.wait_for_log(
        lambda log: any(e.get("caller") == ALICE and e.get("status") == 200 for e in _entries(log))
    )


def test_a_verified_caller_not_on_the_list_is_a_403(google, guarded):
    answer = _post(guarded, google.access_token(BOB))
    assert answer.status_code == 403
    assert answer.json() == {
        "error": f"{BOB} (access token) is not allowed to call this function; "
        "add it to CPR_ALLOWED_PRINCIPALS"
    }
    on_v1 = _post(guarded, google.access_token(BOB), path=V1)
    assert on_v1.json()["error"]["status"] == "PERMISSION_DENIED"
    # A look-alike domain is not the domain.
    assert _post(guarded, google.access_token("eve@notexample.org")).status_code == 403


def test_an_access_token_without_the_cloud_platform_scope_is_a_401(google, guarded):
    # What a site that signs its users in with Google holds: it must not open the function.
    token = google.access_token(ALICE, scope="openid email")
    answer = _post(guarded, token)
    assert answer.status_code == 401
    assert "lacks the https://www.googleapis.com/auth/cloud-platform scope" in answer.text


def test_an_id_token_on_the_shared_functions_host_must_name_this_function(google, guarded):
    host = "us-central1-my-project.cloudfunctions.net"
    ours = google.id_token(ALICE, f"http://{host}/iris-fn")
    sibling = google.id_token(ALICE, f"http://{host}/other-fn")
    headers = {"Host": host}
    elsewhere = _post(guarded, path="/iris-fn/predict", header=f"Bearer {ours}")
    assert elsewhere.status_code == 401, "not sent to that host"
    for token, path, status in (
        (ours, "/iris-fn/predict", 200),
        (sibling, "/other-fn/predict", 401),
    ):
        answer = requests.post(
            guarded.url + path,
            json={"instances": IRIS},
            headers={**headers, "Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == status, answer.text


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"email": None}, "names no email"),
        ({"email_verified": "false"}, "is not verified"),
    ],
)
def test_an_access_token_without_a_verified_email_is_a_401(google, guarded, claims, message):
    email = claims.pop("email", ALICE)
    token = google.access_token(email, **claims)
    answer = _post(guarded, token)
    assert answer.status_code == 401 and message in answer.json()["error"]


def test_an_unknown_or_expired_access_token_is_a_401(google, guarded):
    assert _post(guarded, "ya29.never-issued").status_code == 401
    expired = google.access_token(ALICE, seconds=-10)
    answer = _post(guarded, expired)
    assert answer.status_code == 401
    assert answer.json() == {"error": "the access token is invalid or expired"}


def test_an_id_token_for_this_function_is_admitted(google, guarded):
    token = google.id_token(ALICE, guarded.url)
    assert _post(guarded, token).json() == EXPECTED


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda g, url: g.id_token(ALICE, url, exp=int(time.time()) - 60), "expired"),
        (lambda g, url: g.id_token(ALICE, url, key=Key("key-1")), "signature"),
        (lambda g, url: g.id_token(ALICE, "https://another-function.a.run.app"), "audience"),
        (lambda g, url: g.id_token(ALICE, url, iss="https://evil.example"), "issued by"),
    ],
    ids=["expired", "forged", "wrong-audience", "wrong-issuer"],
)
def test_a_bad_id_token_is_a_401_naming_what_failed(google, guarded, make, message):
    answer = _post(guarded, make(google, guarded.url))
    assert answer.status_code == 401
    assert message in answer.json()["error"].lower()


def test_a_burst_with_one_new_token_asks_google_once(google, guarded):
    token = google.access_token(ALICE)
    before = google.calls["tokeninfo"]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: _post(guarded, token), range(200)))
    assert [a.status_code for a in answers] == [200] * 200
    assert google.calls["tokeninfo"] - before == 1


def test_an_answer_is_kept_until_the_token_expires_then_asked_again(google, guarded):
    token = google.access_token(ALICE, seconds=2)
    before = google.calls["tokeninfo"]
    assert _post(guarded, token).status_code == 200
    assert _post(guarded, token).status_code == 200
    assert google.calls["tokeninfo"] - before == 1
    time.sleep(2.5)
    assert _post(guarded, token).status_code == 401
    assert google.calls["tokeninfo"] - before == 2


def test_when_google_cannot_answer_nobody_is_let_in(google, guarded, tmp_path):
    google.down = True
    try:
        answer = _post(guarded, google.access_token(ALICE))
    finally:
        google.down = False
    assert answer.status_code == 503
    assert "could not be verified" in answer.json()["error"]
    # Both endpoints at a port where nothing listens: refused, and the function keeps serving.
    closed = f"http://127.0.0.1:{free_port()}"
    env = {**_env(google, tmp_path), "CPR_AUTH_TOKENINFO_URL": closed, "CPR_AUTH_CERTS_URL": closed}
    fn = FunctionProcess(env, tmp_path / "closed.log").start()
    try:
        for token in (google.access_token(ALICE), google.id_token(ALICE, fn.url)):
            refused = _post(fn, token)
            assert refused.status_code == 503, refused.text
            assert "could not be reached" in refused.json()["error"]
        assert requests.get(fn.url + "/health", timeout=30).status_code == 200
    finally:
        fn.stop()
    assert _post(guarded, google.access_token(ALICE)).json() == EXPECTED


def test_no_token_reaches_a_log_line_a_response_or_the_status(google, guarded):
    access, identity = google.access_token(ALICE), google.id_token(ALICE, guarded.url)
    bad = google.id_token(ALICE, "https://elsewhere.example")
    answers = [_post(guarded, t) for t in (access, identity, bad, "ya29.not-a-real-one")]
    last = {"Authorization": f"Bearer {access}", "User-Agent": "the last request"}
    status = requests.get(guarded.url + "/", headers=last)
    assert status.status_code == 200
    assert status.json()["config"]["auth"] == "google"
    # The entries are written in the order the requests were answered: the last one's is
    # written last.
    texts = [a.text for a in answers] + [status.text, guarded.wait_for_log("the last request")]
    for token in (access, identity, bad, "ya29.not-a-real-one"):
        assert not any(token in text for text in texts)


def test_googles_clients_are_admitted_with_a_token_and_refused_as_they_expect(google, guarded):
    from google.cloud import aiplatform_v1
    from google.oauth2.credentials import Credentials
    from googleapiclient import discovery

    opened = []

    def ml(token: str):
        client = discovery.build(
            "ml",
            "v1",
            client_options={"api_endpoint": guarded.url},
            credentials=Credentials(token),
            cache_discovery=False,
        )
        opened.append(client)
        return client

    def vertex(token: str):
        client = aiplatform_v1.PredictionServiceClient(
            client_options={"api_endpoint": guarded.url},
            transport="rest",
            credentials=Credentials(token),
        )
        opened.append(client.transport)
        return client

    try:
        _calls(google, guarded, ml, vertex)
    finally:
        for client in opened:
            client.close()


def _calls(google, guarded, ml, vertex) -> None:
    from google.api_core import exceptions
    from google.auth.exceptions import RefreshError
    from google.protobuf import json_format
    from googleapiclient.errors import HttpError

    name = "projects/my-project/models/default/versions/v1"
    endpoint = "projects/my-project/locations/us-central1/endpoints/default"
    for token in (google.access_token(ALICE), google.id_token(ROBOT, guarded.url)):
        body = {"instances": IRIS}
        assert ml(token).projects().predict(name=name, body=body).execute() == EXPECTED
        answer = vertex(token).predict(endpoint=endpoint, instances=IRIS)
        predictions = [json_format.MessageToDict(p) for p in answer._pb.predictions]
        assert predictions == [float(p) for p in EXPECTED["predictions"]]

    not_listed = google.access_token(BOB)
    with pytest.raises(HttpError) as refused:
        ml(not_listed).projects().predict(name=name, body={"instances": IRIS}).execute()
    assert refused.value.resp.status == 403
    with pytest.raises(exceptions.Forbidden):
        vertex(not_listed).predict(endpoint=endpoint, instances=IRIS)
    # A token that does not verify: the clients try to refresh it, as against Google.
    with pytest.raises(RefreshError):
        ml("ya29.revoked").projects().predict(name=name, body={"instances": IRIS}).execute()
    with pytest.raises(RefreshError):
        vertex("ya29.revoked").predict(endpoint=endpoint, instances=IRIS)


def test_an_id_token_client_for_iam_mode(google, guarded, tmp_path, monkeypatch):
    """The client code docs/authentication.md gives for iam mode, as written: credentials
    that mint ID tokens for the function's URL from a service-account key. Cloud Run's IAM
    layer is out of reach here; the function's own ID-token check (audience, signature,
    issuer, expiry) stands in for it."""
    from google.auth.transport import requests as transport
    from google.cloud import aiplatform
    from google.oauth2 import id_token
    from googleapiclient import discovery

    key_file = google.service_account_file(tmp_path, ROBOT)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    url = guarded.url
    credentials = id_token.fetch_id_token_credentials(url, transport.Request())

    ml = discovery.build("ml", "v1", client_options={"api_endpoint": url}, credentials=credentials)
    try:
        answer = ml.projects().predict(
            name="projects/my-project/models/default/versions/v1", body={"instances": IRIS}
        )
        assert answer.execute() == EXPECTED
    finally:
        ml.close()
    aiplatform.init(
        project="my-project",
        location="us-central1",
        api_endpoint=url,
        api_transport="rest",
        credentials=credentials,
    )
    endpoint = aiplatform.Endpoint("projects/my-project/locations/us-central1/endpoints/default")
    predictions = endpoint.predict(instances=IRIS).predictions
    assert predictions == [float(p) for p in EXPECTED["predictions"]]
    assert google.calls["token"] >= 1
