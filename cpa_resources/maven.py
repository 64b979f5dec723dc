"""Jars from Maven Central, fetched once with `mvn` into a cache folder outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from string import Template

POM = Template("""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.cpa</groupId>
  <artifactId>$artifact-jars</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$group</groupId>
      <artifactId>$artifact</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
</project>
""")


def fetch(group: str, artifact: str, version: str, target: Path, java_home: Path, *, groups: str = "") -> Path:
    """`target/lib` holding the artifact's jar and its runtime dependencies (only those of the
    comma-separated `groups`, when given); fetched unless already complete.

    Maven resolves into a temporary sibling folder renamed into place only when complete, so an
    interrupted fetch never leaves a cache that looks usable."""
    jar = target / "lib" / f"{artifact}-{version}.jar"
    if jar.exists():
        return target / "lib"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"fetching {group}:{artifact} needs Maven: apt-get install maven")
    print(f"fetching {group}:{artifact}:{version} from Maven Central into {target} ...", flush=True)
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / "pom.xml").write_text(POM.substitute(group=group, artifact=artifact, version=version))
        command = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory=lib"]
        if groups:
            command.append(f"-DincludeGroupIds={groups}")
        env = {**os.environ, "JAVA_HOME": str(java_home)}
        # Captured: Maven 3.8 prints stray colour codes even with -q; shown only on failure.
        result = subprocess.run(command, cwd=staging, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0 or not (staging / jar.relative_to(target)).exists():
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise RuntimeError(f"mvn could not fetch {group}:{artifact}:{version}\n{output}")
        shutil.rmtree(target, ignore_errors=True)  # a leftover without the artifact's jar
        try:
            staging.rename(target)
        except OSError:
            if not jar.exists():  # a concurrent fetch won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    jars = len(list((target / "lib").glob("*.jar")))
    print(f"fetched {jars} jars in {time.monotonic() - started:.1f} s", flush=True)
    return target / "lib"
