"""The OHIF viewer under ``/ohif/``: the official prebuilt ``@ohif/app`` (pinned), fetched at setup with npm
into an ignored folder (``make viewer``; never committed), served with an ``app-config.js`` the hub writes:
one DICOMweb data source at the hub's own ``/dicom-web``, the console's session cookie for authentication.

``python -m telenet.web.viewer install DIR`` fetches and unpacks it. The package is built for the site root,
so the unpacked copy is re-rooted at ``/ohif/`` (webpack's public path and the paths in ``index.html``)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from telenet.config import Settings
from telenet.web.render import context_of

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
BASE = "/ohif/"
VIEWER_DIR = web.AppKey("viewer_dir", Path)

# OHIF compiles WebAssembly codecs and runs web workers from blobs; everything still comes from this origin.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval' blob:; "
    "worker-src 'self' blob:; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' data: blob:; font-src 'self' data:; frame-ancestors 'self'"
)

APP_CONFIG = """/* Written by the telenet hub: one DICOMweb source, the hub itself (same origin, session cookie). */
window.config = {
  routerBasename: '/ohif',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showLoadingIndicator: true,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'telenet',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'telenet',
      configuration: {
        friendlyName: %(name)s,
        name: 'telenet',
        wadoUriRoot: window.location.origin + '/dicom-web',
        qidoRoot: window.location.origin + '/dicom-web',
        wadoRoot: window.location.origin + '/dicom-web',
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      },
    },
  ],
};
"""


def viewer_dir(settings: Settings) -> Path:
    return Path(settings.viewer_dir) if settings.viewer_dir else Path(settings.var_dir) / "viewer" / "dist"


async def app_config(request: web.Request) -> web.Response:
    body = APP_CONFIG % {"name": json.dumps("telenet 远程医疗协作网", ensure_ascii=False)}
    return web.Response(
        text=body, content_type="application/javascript", charset="utf-8", headers={"Cache-Control": "no-store"}
    )


async def serve(request: web.Request) -> web.StreamResponse:
    """A file of the viewer, or its index.html for any other path under /ohif/ (the SPA's own routes)."""
    root = request.app[VIEWER_DIR]
    index = root / "index.html"
    if not index.is_file():
        return web.Response(
            status=503,
            text="The OHIF viewer is not installed: run `make viewer` (needs npm). 阅片器尚未安装：运行 make viewer。",
            content_type="text/plain",
        )
    tail = request.match_info.get("tail", "")
    if tail:
        candidate = (root / tail).resolve()
        if candidate.is_relative_to(root.resolve()) and candidate.is_file() and candidate.name != "app-config.js":
            return web.FileResponse(candidate, headers={"Cache-Control": "public, max-age=3600"})
    if Path(tail).suffix not in ("", ".html"):
        raise web.HTTPNotFound()
    ctx = await context_of(request)
    if ctx.actor is None:
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    return web.FileResponse(index, headers={"Cache-Control": "no-store"})


def install(app: web.Application, settings: Settings) -> set[tuple[str, str]]:
    app[VIEWER_DIR] = viewer_dir(settings)
    app.router.add_get("/ohif/app-config.js", app_config)
    app.router.add_get("/ohif", serve)
    app.router.add_get("/ohif/{tail:.*}", serve)
    return {("GET", "/ohif/app-config.js"), ("GET", "/ohif"), ("GET", "/ohif/{tail}")}


def reroot(dist: Path, base: str = BASE) -> None:
    """Make a build for ``/`` work under ``base``: webpack's public path in every bundle, and index.html."""
    marker = '__webpack_require__.p = "/";'
    for path in dist.glob("*.js"):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if marker in text:
            path.write_text(text.replace(marker, f'__webpack_require__.p = "{base}";'), "utf-8", "surrogateescape")
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    html = html.replace('href="/', f'href="{base}').replace('src="/', f'src="{base}')
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"')
    index.write_text(html, encoding="utf-8")


def fetch(dest: Path, npm: str = "npm") -> Path:
    """``npm pack`` the pinned package, unpack its ``dist`` into ``dest/dist`` and re-root it; the dist path."""
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / "VERSION"
    dist = dest / "dist"
    if stamp.is_file() and stamp.read_text().strip() == OHIF_VERSION and (dist / "index.html").is_file():
        return dist
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        subprocess.run(
            [npm, "pack", f"{OHIF_PACKAGE}@{OHIF_VERSION}", "--pack-destination", tmp, "--silent"], check=True
        )
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/dist/")]
            tar.extractall(tmp, members=members, filter="data")
        if dist.exists():
            shutil.rmtree(dist)
        shutil.move(str(Path(tmp) / "package" / "dist"), dist)
    reroot(dist)
    stamp.write_text(OHIF_VERSION + "\n")
    return dist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m telenet.web.viewer")
    parser.add_argument("command", choices=["install"])
    parser.add_argument("dest", type=Path, help="folder for the viewer (its dist/ is served under /ohif/)")
    args = parser.parse_args(argv)
    npm = shutil.which("npm")
    if npm is None:
        print("npm is not installed: the console works without the viewer; install node/npm and run make viewer")
        return 1
    print(f"OHIF viewer {OHIF_VERSION} in {fetch(args.dest, npm)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
