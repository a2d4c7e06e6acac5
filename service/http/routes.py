"""The route table: FHIR API under the base path, probes and metrics at the root."""

from __future__ import annotations

from aiohttp import web

from service.http import bundle, conditional, history, metadata, patch, probes, reindex, rest, search


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get("/livez", probes.livez)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/healthz", probes.readyz)
    app.router.add_get("/metrics", probes.metrics)

    app.router.add_get(base, search.system_search_get)
    if base:
        app.router.add_post(base, bundle.post_bundle)  # batch and transaction, with or without the slash
    app.router.add_post(f"{base}/", bundle.post_bundle)
    app.router.add_post(f"{base}/_search", search.system_search_post)
    app.router.add_get(f"{base}/metadata", metadata.metadata)
    app.router.add_get(f"{base}/_history", history.system_history)
    # Operations before `{type}`: a `$name` segment is never a resource type.
    app.router.add_post(f"{base}/$reindex", reindex.start)
    app.router.add_get(f"{base}/{reindex.STATUS_OPERATION}", reindex.status)
    app.router.add_delete(f"{base}/{reindex.STATUS_OPERATION}", reindex.cancel)
    app.router.add_post(f"{base}/{reindex.STATUS_OPERATION}", reindex.control)
    # `_history` and `_search` are registered before `{id}`: ids cannot start with '_', so they never overlap.
    app.router.add_get(f"{base}/{{type}}/_history", history.type_history)
    app.router.add_post(f"{base}/{{type}}/_search", search.search_post)
    app.router.add_post(f"{base}/{{type}}/$validate", rest.validate)
    app.router.add_get(f"{base}/{{type}}", search.search_get)
    app.router.add_post(f"{base}/{{type}}", conditional.create)  # plain create without If-None-Exist
    app.router.add_put(f"{base}/{{type}}", conditional.update)
    app.router.add_delete(f"{base}/{{type}}", conditional.delete)
    app.router.add_patch(f"{base}/{{type}}", patch.patch_conditional)
    app.router.add_get(f"{base}/{{type}}/{{id}}", conditional.read)
    app.router.add_put(f"{base}/{{type}}/{{id}}", rest.update)
    app.router.add_delete(f"{base}/{{type}}/{{id}}", rest.delete)
    app.router.add_patch(f"{base}/{{type}}/{{id}}", patch.patch_instance)
    app.router.add_get(f"{base}/{{type}}/{{id}}/_history", history.instance_history)
    app.router.add_post(f"{base}/{{type}}/{{id}}/$reindex", reindex.instance_reindex)
    app.router.add_get(f"{base}/{{type}}/{{id}}/$reindex-dryrun", reindex.instance_dryrun)
    app.router.add_post(f"{base}/{{type}}/{{id}}/$reindex-dryrun", reindex.instance_dryrun)
    app.router.add_get(f"{base}/{{type}}/{{id}}/_history/{{vid}}", conditional.vread)
