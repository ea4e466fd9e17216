"""The emulator over HTTP: the API routes the SDK calls, faults and latency, and its own routes."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.serving import BaseWSGIServer, make_server

from postupload.emulator.assets import Asset
from postupload.emulator.operations import Emulator
from postupload.emulator.wire import (
    UNSIGNED_NOTIFICATION_PARAMS,
    ApiError,
    check_basic_auth,
    check_upload_auth,
    required,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

RESOURCE_TYPES = ("image", "video", "raw", "auto")


def create_app(emulator: Emulator) -> Flask:
    """The Flask app serving the API and the emulator's own routes."""
    app = Flask("postupload.emulator")
    app.config["MAX_FORM_PARTS"] = 100_000  # the service takes (and ignores) ids beyond 1000
    app.config["MAX_FORM_MEMORY_SIZE"] = 20 * 2**20  # a data URI travels as a form field
    cloud = emulator.account.cloud_name
    upload_actions: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
        "explicit": emulator.explicit,
        "tags": emulator.tags,
        "context": emulator.context,
        "metadata": emulator.metadata,
        "rename": emulator.rename,
        "destroy": emulator.destroy,
        "upload": lambda resource_type, params: _upload(emulator, resource_type, params),
    }

    @app.post(f"/v1_1/{cloud}/<resource_type>/<action>")
    def upload_api(resource_type: str, action: str) -> Response:
        params = _form_params(request.form)
        entry = _entry("upload", action, resource_type, params)

        def authenticate() -> str:
            unsigned = UNSIGNED_NOTIFICATION_PARAMS if action != "explicit" else frozenset()
            authorization = request.headers.get("Authorization")
            return check_upload_auth(emulator.account, params, authorization, time.time(), unsigned)

        def act() -> dict[str, Any]:
            if action not in upload_actions:
                raise ApiError(404, f"Unsupported Upload API action {action!r}")
            return upload_actions[action](resource_type, params)

        return serve_call(emulator, entry, authenticate, act)

    def admin_call(
        endpoint: str, resource_type: str, act: Callable[[dict[str, Any]], Any], **extra: Any
    ) -> Response:
        params = _admin_params()
        entry = _entry("admin", endpoint, resource_type, params, **extra)

        def authenticate() -> str:
            check_basic_auth(emulator.account, request.headers.get("Authorization"))
            return "basic"

        return serve_call(emulator, entry, authenticate, lambda: act(params))

    @app.get(f"/v1_1/{cloud}/resources/<resource_type>")
    @app.get(f"/v1_1/{cloud}/resources/<resource_type>/<delivery_type>")
    def list_resources(resource_type: str, delivery_type: str | None = None) -> Response:
        if resource_type not in RESOURCE_TYPES and delivery_type is None:  # resources/{asset_id}
            return admin_call("resource_by_asset_id", "", lambda _: emulator.by_asset_id(resource_type))

        def act(params: dict[str, Any]) -> Any:
            return emulator.list_resources(resource_type, delivery_type, params)

        return admin_call("resources", resource_type, act, type=delivery_type)

    @app.delete(f"/v1_1/{cloud}/resources/<resource_type>/<delivery_type>")
    def delete_resources(resource_type: str, delivery_type: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            return emulator.delete_resources(resource_type, delivery_type, params)

        return admin_call("delete_resources", resource_type, act, type=delivery_type)

    @app.get(f"/v1_1/{cloud}/resources")
    def resource_types() -> Response:
        return admin_call("resource_types", "", lambda _: {"resource_types": emulator.resource_types()})

    @app.get(f"/v1_1/{cloud}/resources/<resource_type>/context")
    def resources_by_context(resource_type: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            key, value = required(params, "key"), params.get("value")

            def by_context(asset: Asset) -> bool:
                return key in asset.context and (not value or asset.context[key] == value)

            return emulator.list_resources(resource_type, None, params, where=by_context)

        return admin_call("resources_by_context", resource_type, act)

    @app.get(f"/v1_1/{cloud}/resources/<resource_type>/moderations/<kind>/<status>")
    def resources_by_moderation(resource_type: str, kind: str, status: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            return emulator.list_resources(
                resource_type,
                None,
                params,
                where=lambda a: a.moderation_kind == kind and a.moderation_status == status,
            )

        return admin_call("resources_by_moderation", resource_type, act)

    @app.get(f"/v1_1/{cloud}/resources/<resource_type>/tags/<tag>")
    def resources_by_tag(resource_type: str, tag: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            return emulator.list_resources(resource_type, None, params, tag=tag)

        return admin_call("resources_by_tag", resource_type, act, tag=tag)

    @app.delete(f"/v1_1/{cloud}/resources/<resource_type>/tags/<tag>")
    def delete_resources_by_tag(resource_type: str, tag: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            return emulator.delete_resources(resource_type, None, params, tag=tag)

        return admin_call("delete_resources_by_tag", resource_type, act, tag=tag)

    @app.route(f"/v1_1/{cloud}/metadata_fields", methods=["GET", "POST"])
    def metadata_fields() -> Response:
        def act(params: dict[str, Any]) -> Any:
            with emulator.lock:
                if request.method == "POST":
                    return emulator.metadata_fields.add(params)
                return {"metadata_fields": list(emulator.metadata_fields.fields.values())}

        return admin_call("metadata_fields", "", act)

    @app.route(f"/v1_1/{cloud}/metadata_fields/<external_id>", methods=["GET", "PUT", "DELETE"])
    def metadata_field(external_id: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            fields = emulator.metadata_fields
            with emulator.lock:
                if request.method == "PUT":
                    return fields.update(external_id, params)
                if request.method == "DELETE":
                    return fields.delete(external_id)
                return fields.get(external_id)

        return admin_call("metadata_field", "", act, external_id=external_id)

    @app.route(f"/v1_1/{cloud}/metadata_fields/<external_id>/datasource", methods=["PUT", "DELETE"])
    def metadata_datasource(external_id: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            fields = emulator.metadata_fields
            with emulator.lock:
                if request.method == "PUT":
                    return fields.update_datasource(external_id, params.get("values"))
                return fields.set_entries_state(external_id, params.get("external_ids") or [], "inactive")

        return admin_call("metadata_datasource", "", act, external_id=external_id)

    @app.post(f"/v1_1/{cloud}/metadata_fields/<external_id>/datasource_restore")
    def metadata_datasource_restore(external_id: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            with emulator.lock:
                ids = params.get("external_ids") or []
                return emulator.metadata_fields.set_entries_state(external_id, ids, "active")

        return admin_call("metadata_datasource_restore", "", act, external_id=external_id)

    @app.post(f"/v1_1/{cloud}/metadata_fields/<external_id>/datasource/order")
    def metadata_datasource_order(external_id: str) -> Response:
        def act(params: dict[str, Any]) -> Any:
            with emulator.lock:
                fields = emulator.metadata_fields
                return fields.reorder_datasource(external_id, params.get("order_by"), params.get("direction"))

        return admin_call("metadata_datasource_order", "", act, external_id=external_id)

    @app.post(f"/v1_1/{cloud}/resources/search")
    def search() -> Response:
        return admin_call("search", "", emulator.search)

    @app.route(
        f"/v1_1/{cloud}/resources/<resource_type>/<delivery_type>/<path:public_id>",
        methods=["GET", "POST"],
    )
    def admin_resource(resource_type: str, delivery_type: str, public_id: str) -> Response:
        params = _admin_params()
        endpoint = "update" if request.method == "POST" else "resource"
        entry = _entry("admin", endpoint, resource_type, params, type=delivery_type, public_id=public_id)

        def authenticate() -> str:
            check_basic_auth(emulator.account, request.headers.get("Authorization"))
            return "basic"

        def act() -> Any:
            if request.method == "POST":
                return emulator.update(resource_type, delivery_type, public_id, params)
            with emulator.lock:
                return emulator._asset(resource_type, delivery_type, public_id).resource(cloud)

        return serve_call(emulator, entry, authenticate, act)

    @app.post("/emulator/upload")
    def emulator_upload() -> tuple[Response, int]:
        values = request.get_json(silent=True)
        if not isinstance(values, dict):
            return jsonify({"error": {"message": "send the asset's fields as a JSON object"}}), 400
        return jsonify(emulator.upload(values)), 200

    @app.get("/emulator/state")
    def emulator_state() -> Response:
        with emulator.lock:
            return jsonify(
                {
                    "assets": [asset.state(cloud) for asset in emulator.assets.values()],
                    "faults": emulator.faults.as_dict(),
                    "admin": {
                        "budget": emulator.rate_limit.budget,
                        "window": emulator.rate_limit.window,
                        "used": emulator.rate_limit.used,
                    },
                }
            )

    @app.get("/emulator/calls")
    def emulator_calls() -> Response:
        since = request.args.get("since", 0, type=int)
        with emulator.lock:
            return jsonify({"calls": emulator.calls[since:]})

    @app.get("/emulator/notifications")
    def emulator_notifications() -> Response:
        with emulator.lock:
            return jsonify({"notifications": json.loads(json.dumps(emulator.notifier.sent))})

    @app.route("/emulator/faults", methods=["GET", "POST"])
    def emulator_faults() -> tuple[Response, int]:
        if request.method == "POST":
            values = request.get_json(silent=True)
            if not isinstance(values, dict):
                return jsonify({"error": {"message": "send the faults to change as a JSON object"}}), 400
            with emulator.lock:
                try:
                    emulator.faults.update(values)
                except ValueError as error:
                    return jsonify({"error": {"message": str(error)}}), 400
        with emulator.lock:
            return jsonify(emulator.faults.as_dict()), 200

    return app


def serve(emulator: Emulator | Sequence[Emulator], host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """A threaded HTTP server for this emulator, or these (see `several`); call serve_forever() on it
    (or in a thread)."""
    emulators = [emulator] if isinstance(emulator, Emulator) else list(emulator)
    app = create_app(emulators[0]) if len(emulators) == 1 else several(emulators)
    return make_server(host, port, app, threaded=True)


def several(emulators: Sequence[Emulator]) -> WSGIApplication:
    """Several product environments on one server, as Cloudinary serves them: each one's API under
    /v1_1/<cloud_name>/, checked with its own credentials; its own routes under
    /emulator/<cloud_name>/... (plain /emulator/... is the first one's)."""
    apps = {emulator.account.cloud_name: create_app(emulator) for emulator in emulators}
    first = apps[emulators[0].account.cloud_name]

    def dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        parts = environ.get("PATH_INFO", "").split("/")  # "", "v1_1" or "emulator", cloud, ...
        if len(parts) > 2 and parts[1] == "v1_1" and parts[2] in apps:
            return apps[parts[2]](environ, start_response)
        if len(parts) > 3 and parts[1] == "emulator" and parts[2] in apps:
            inner = {**environ, "PATH_INFO": "/emulator/" + "/".join(parts[3:])}
            return apps[parts[2]](inner, start_response)
        return first(environ, start_response)

    return dispatch


def serve_call(
    emulator: Emulator, entry: dict[str, Any], authenticate: Callable[[], str], act: Callable[[], Any]
) -> Response:
    """Answer one API call: latency, faults, auth, the Admin budget, the effect, the record."""
    faults, admin = emulator.faults, entry["api"] == "admin"
    with emulator.lock:
        jitter = faults.random.uniform(0, faults.latency_jitter) if faults.latency_jitter else 0.0
        error_roll, timeout_roll = faults.random.random(), faults.random.random()
        burst = admin and faults.rate_limit_burst > 0
        if burst:
            faults.rate_limit_burst -= 1
    if faults.latency + jitter:
        time.sleep(faults.latency + jitter)
    headers: dict[str, str] = {}
    try:
        if error_roll < faults.error_rate:
            entry["fault"] = "error"
            return _finish(emulator, entry, *_server_error(error_roll))
        entry["auth"] = authenticate()  # a rejected call costs no budget
        if admin:
            if burst:
                entry["fault"] = "rate_limit_burst"
            with emulator.lock:
                headers = emulator.rate_limit.take(emulator.clock(), burst, faults.rate_limit_status)
        # The effect and its record at once: a test that saw the effect in the state found no call
        # in the calls yet.
        with emulator.lock:
            answer = act()
            hangs = timeout_roll < faults.timeout_rate
            if hangs:  # the effect is done, but the answer never comes: the caller cannot tell
                entry["fault"] = "timeout"
            response = _finish(emulator, entry, jsonify(answer), 200, headers)
    except ApiError as error:
        if admin and not headers:
            with emulator.lock:
                headers = emulator.rate_limit.headers(emulator.clock())
        body = jsonify({"error": {"message": error.message}})
        return _finish(emulator, entry, body, error.status, {**headers, **error.headers})
    if hangs:
        time.sleep(faults.hang)
        return jsonify({"error": {"message": "Gateway Timeout"}}), 504  # type: ignore[return-value]
    return response


def _finish(
    emulator: Emulator,
    entry: dict[str, Any],
    body: Response,
    status: int,
    headers: dict[str, str] | None = None,
) -> Response:
    entry["status"] = status
    entry["duration"] = round(time.time() - entry["time"], 4)  # latency included, a hang not
    emulator.record(entry)

    def answered() -> None:  # once the answer is written out (a timeout's never is: no "answered")
        entry["answered"] = round(time.time(), 4)

    body.call_on_close(answered)
    body.status_code = status
    body.headers.update(headers or {})
    body.headers["X-Request-Id"] = secrets.token_hex(16)  # as Cloudinary's (the SDK's `request_id`)
    return body


def _entry(
    api: str, endpoint: str, resource_type: str, params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "api": api,
        "endpoint": endpoint,
        "resource_type": resource_type,
        **extra,
        "params": params,
        "time": time.time(),
        "client_port": request.environ.get("REMOTE_PORT"),  # which connection: a caller's kill loses it
    }


def _server_error(roll: float) -> tuple[Response, int, dict[str, str]]:
    """500 or 503 in Cloudinary's error shape, or a gateway's 502 HTML page (the SDK cannot parse it)."""
    status = (500, 502, 503)[int(roll * 1000) % 3]
    if status == 502:
        page = Response("<html><body><h1>502 Bad Gateway</h1></body></html>", mimetype="text/html")
        return page, 502, {}
    return jsonify({"error": {"message": "General Error"}}), status, {}


def _upload(emulator: Emulator, resource_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """The upload action's file: a multipart part (bytes and its name) or the `file` field's text."""
    sent = request.files.get("file")
    content: bytes | str = sent.read() if sent is not None else str(params.pop("file", "") or "")
    filename = sent.filename if sent is not None else None
    if not content:
        raise ApiError(400, "Missing required parameter - file")
    if request.headers.get("Content-Range"):
        if isinstance(content, str):
            raise ApiError(400, "A part of a large upload is bytes, not a URL")
        return emulator.upload_part(resource_type, params, content, filename, request.headers)
    return emulator.upload_file(resource_type, params, content, filename)


def _form_params(form: MultiDict[str, str]) -> dict[str, Any]:
    """Form fields as the API reads them: `name[]` repeated fields are one list."""
    params: dict[str, Any] = {}
    for key in form:
        if key.endswith("[]"):
            params[key[:-2]] = form.getlist(key)
        else:
            params[key] = form[key]
    return params


def _admin_params() -> dict[str, Any]:
    """Admin API parameters: a JSON body, form fields (`name[0]`-style lists) or the query string."""
    if request.is_json:  # the SDK says JSON even on a GET, whose parameters are in the query string
        body = request.get_json(silent=True)
        return {**request.args.to_dict(), **(body if isinstance(body, dict) else {})}
    params: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for source in (request.args, request.form):
        for key in source:
            match = re.fullmatch(r"(.+)\[\d*\]", key)
            if match:
                lists.setdefault(match.group(1), []).extend(source.getlist(key))
            else:
                params[key] = source[key]
    return {**params, **lists}
