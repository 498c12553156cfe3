{{/* The name prefix of every object: the release name, or <release>-katalyst
when the release name does not say katalyst. */}}
{{- define "katalyst.fullname" -}}
{{- if contains "katalyst" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-katalyst" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "katalyst.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels of every object; the component is given as the "component" key. */}}
{{- define "katalyst.labels" -}}
app.kubernetes.io/name: katalyst
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: katalyst
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The selector labels of a component's pods (immutable once deployed). */}}
{{- define "katalyst.selector" -}}
app.kubernetes.io/name: katalyst
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The securityContext of the controller and the extender: no privileges. */}}
{{- define "katalyst.restricted" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* POD_NAME and POD_NAMESPACE from the downward API (leader election identity). */}}
{{- define "katalyst.podEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- end -}}

{{- /* One definition for both configurations: which pods, how, and never the
system namespaces (an outage of the webhook cannot block them). */}}
{{- define "katalyst.webhookCommon" -}}
admissionReviewVersions: [v1]
sideEffects: None
# Ignore until the controller's leader has seen the API server able to verify the
# webhook's certificate; it then sets webhook.failurePolicy (--webhook-failure-policy).
failurePolicy: Ignore
timeoutSeconds: {{ int64 .w.timeoutSeconds }}
matchPolicy: Equivalent
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{- include "katalyst.webhookExcluded" (merge (dict "ns" .ns) .w) | nindent 8 }}
    - key: {{ .w.optOutLabel.key }}
      operator: NotIn
      values: [{{ .w.optOutLabel.value | quote }}]
{{- end }}

{{/* The namespaces never sent to the webhook: the values', the release's, and
cert-manager's when it issues the webhook's certificate. Call with .Values.webhook
plus "ns" (the release namespace). */}}
{{- define "katalyst.webhookExcluded" -}}
{{- $list := append .excludedNamespaces .ns -}}
{{- if eq .certMode "certManager" -}}
{{- $list = append $list .certManager.namespace -}}
{{- end -}}
{{- toYaml (uniq $list) -}}
{{- end -}}
