"""The standalone node's manifest folder."""

from __future__ import annotations

from pathlib import Path

from agent.standalone.manifests import load_folder, pod_uid
from katalyst.qos import QoSLevel

SERVICE = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    katalyst.kubewharf.io/qos_level: shared_cores
spec:
  containers:
    - name: server
      command: ["python3", "-m", "http.server"]
      args: ["8080"]
      env: [{name: PORT, value: "8080"}]
      resources:
        requests: {cpu: 500m, memory: 64Mi}
"""

BATCH = """\
apiVersion: v1
kind: Pod
metadata:
  name: batch
  namespace: jobs
  annotations:
    katalyst.kubewharf.io/qos_level: reclaimed_cores
spec:
  restartPolicy: Never
  containers:
    - name: burn
      command: ["sh", "-c", "while :; do :; done"]
      resources:
        requests:
          resource.katalyst.kubewharf.io/reclaimed_millicpu: "1000"
          resource.katalyst.kubewharf.io/reclaimed_memory: 128Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: broken
  annotations:
    katalyst.kubewharf.io/qos_level: fast_cores
spec:
  containers:
    - name: x
      command: ["true"]
"""


def test_a_folder_of_pods(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(SERVICE)
    (tmp_path / "batch.yml").write_text(BATCH)
    (tmp_path / "notes.txt").write_text("ignored")
    pods, errors = load_folder(tmp_path)
    assert set(pods) == {"default/web", "jobs/batch"}
    web = pods["default/web"]
    assert web.view.level is QoSLevel.SHARED_CORES
    assert web.containers[0].argv == ("python3", "-m", "http.server", "8080")
    assert web.containers[0].env == {"PORT": "8080"}
    assert web.view.uid == pod_uid("default", "web")
    assert pods["jobs/batch"].restart_policy == "Never"
    assert pods["jobs/batch"].view.level is QoSLevel.RECLAIMED_CORES
    assert len(errors) == 1
    assert "batch.yml (document 2)" in errors[0].message
    assert "katalyst.kubewharf.io/qos_level" in errors[0].message


def test_uids_are_stable_and_revisions_follow_the_content(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(SERVICE)
    first = load_folder(tmp_path)[0]["default/web"]
    again = load_folder(tmp_path)[0]["default/web"]
    assert (first.view.uid, first.revision) == (again.view.uid, again.revision)
    (tmp_path / "web.yaml").write_text(SERVICE.replace("500m", "250m"))
    changed = load_folder(tmp_path)[0]["default/web"]
    assert changed.view.uid == first.view.uid
    assert changed.revision != first.revision


def test_bad_files_are_reported_and_never_stop_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n"
    )
    (tmp_path / "b.yaml").write_text("{{{ not yaml")
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "d.yaml").write_text("kind: Deployment\nmetadata: {name: d}\n")
    (tmp_path / "e.yaml").write_text(SERVICE)
    (tmp_path / "f.yaml").write_text(SERVICE)
    pods, errors = load_folder(tmp_path)
    assert set(pods) == {"default/web"}
    messages = "\n".join(e.message for e in errors)
    assert "a.yaml: container 'c' has no command" in messages
    assert "b.yaml: not readable YAML" in messages
    assert "c.yaml: a document must be a mapping" in messages
    assert "d.yaml: kind 'Deployment' is not Pod" in messages
    assert "f.yaml: pod default/web is already defined in e.yaml" in messages


def test_a_missing_folder_is_an_error_not_a_crash(tmp_path: Path) -> None:
    pods, errors = load_folder(tmp_path / "nope")
    assert pods == {}
    assert "cannot list the folder" in errors[0].message


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    (tmp_path / "bomb.yaml").write_text(bomb)
    pods, errors = load_folder(tmp_path)
    assert pods == {}
    assert "aliases are not allowed" in errors[0].message


def test_process_arguments_the_kernel_cannot_take_are_refused(tmp_path: Path) -> None:
    (tmp_path / "nul.yaml").write_text(SERVICE.replace('"8080"]', '"80\\u000080"]'))
    (tmp_path / "env.yaml").write_text(
        SERVICE.replace("name: web", "name: web2").replace("{name: PORT,", "{name: 'A=B',")
    )
    pods, errors = load_folder(tmp_path)
    assert pods == {}
    messages = "\n".join(e.message for e in errors)
    assert "must not contain NUL" in messages
    assert "env 'A=B' must be a C identifier" in messages
