{{/* Name of the chart's objects: the release name, unless it already contains the chart name. */}}
{{- define "kres-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kres-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kres-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kres-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kres-operator.labels" -}}
{{ include "kres-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "kres-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kres-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kres-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kres-operator.leaseName" -}}
{{- default (include "kres-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The operator's permissions on the resolvers' namespaces: ONE list, used by the ClusterRole
(cluster-wide) and by every per-namespace Role (watchNamespaces). It must equal the rules of
manifests/rbac.yaml; tests/tests/k8s_chart.rs asserts that.
*/}}
{{- define "kres-operator.rules" -}}
- apiGroups: ["resolver.kres-operator.io"]
  resources: ["knotresolvers"]
  verbs: ["list", "watch"]
- apiGroups: ["resolver.kres-operator.io"]
  resources: ["knotresolvers/status"]
  verbs: ["patch"]
# One pod per slot: created, labelled serving=false to drain, deleted.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# One immutable ConfigMap per revision; unused revisions are deleted.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The Service, applied server-side; watched so one deleted by hand is re-created (as is the PDB).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# spec.cache.volumeClaimTemplate: one claim per slot, created by its first pod (owned by
# the resolver, garbage-collected with it).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["create"]
# Drains wait until the Service's EndpointSlices dropped the pod.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# kube-runtime's event recorder creates events and patches repeats into a series.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The leader-election Lease, in the release namespace only. */}}
{{- define "kres-operator.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch"]
{{- end }}
