"""Realistic pod dicts shared by the PodView tests."""

from __future__ import annotations

from typing import Any

from katalyst.qos import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
)

# A pod as the API server returns it (trimmed of fields nothing here reads, but keeping
# some that it ignores, to show they are ignored).
API_SERVER_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-7d9f8c6b5-x2k4q",
        "namespace": "shop",
        "uid": "0f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
        "resourceVersion": "123456",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
        "annotations": {
            QOS_LEVEL_ANNOTATION: "dedicated_cores",
            MEMORY_ENHANCEMENT_ANNOTATION: '{"numa_binding": "true", "numa_exclusive": "true"}',
        },
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web"}],
    },
    "spec": {
        "nodeName": "node-17",
        "priority": 0,
        "schedulerName": "default-scheduler",
        "initContainers": [
            {
                "name": "warmup",
                "image": "busybox",
                "resources": {
                    "requests": {"cpu": "2", "memory": "1Gi"},
                    "limits": {"cpu": "2", "memory": "1Gi"},
                },
            }
        ],
        "containers": [
            {
                "name": "app",
                "image": "shop/web:1.2",
                "resources": {
                    "requests": {"cpu": "4", "memory": "8Gi"},
                    "limits": {"cpu": "4", "memory": "8Gi"},
                },
            },
            {
                "name": "sidecar",
                "image": "envoy",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "256Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
            },
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
    "status": {"phase": "Running", "qosClass": "Guaranteed", "podIP": "10.0.0.7"},
}

RECLAIMED_POD: dict[str, Any] = {
    "metadata": {
        "name": "spark-exec-1",
        "namespace": "batch",
        "uid": "aaaa-bbbb",
        "annotations": {
            QOS_LEVEL_ANNOTATION: "reclaimed_cores",
            CPU_ENHANCEMENT_ANNOTATION: '{"suppression_tolerance_rate": "2.5"}',
        },
    },
    "spec": {
        "containers": [
            {
                "name": "executor",
                "resources": {
                    "requests": {
                        RESOURCE_RECLAIMED_MILLICPU: "4k",
                        RESOURCE_RECLAIMED_MEMORY: "8Gi",
                    },
                    "limits": {RESOURCE_RECLAIMED_MILLICPU: "4k", RESOURCE_RECLAIMED_MEMORY: "8Gi"},
                },
            },
            {
                "name": "shuffle",
                "resources": {
                    "limits": {
                        RESOURCE_RECLAIMED_MILLICPU: "1500",
                        RESOURCE_RECLAIMED_MEMORY: "1Gi",
                    }
                },
            },
        ],
        "initContainers": [
            {
                "name": "fetch",
                "resources": {"requests": {RESOURCE_RECLAIMED_MILLICPU: "99k"}},
            }
        ],
    },
}
