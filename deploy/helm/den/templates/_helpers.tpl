{{/* The release's full name: the release name, with "den" added unless it already says it. */}}
{{- define "den.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "den.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "den.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "den.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "den.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The URL agents in workspace pods dial: den's Service by its cluster DNS name unless set. */}}
{{- define "den.agentUrl" -}}
{{- if .Values.agentUrl -}}
{{- .Values.agentUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "den.fullname" .) .Release.Namespace .Values.clusterDomain .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding DEN_DATABASE_URL, and its key. */}}
{{- define "den.databaseSecret" -}}
{{- default (printf "%s-database" (include "den.fullname" .)) .Values.storage.postgres.existingSecret -}}
{{- end -}}
{{- define "den.databaseSecretKey" -}}
{{- if .Values.storage.postgres.existingSecret -}}{{ .Values.storage.postgres.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}

{{/* Refuses values that cannot work, with a sentence saying what to change. */}}
{{- define "den.validate" -}}
{{- $db := .Values.storage.database -}}
{{- if not (has $db (list "sqlite" "postgres")) -}}
{{- fail (printf "storage.database is %q; use sqlite or postgres." $db) -}}
{{- end -}}
{{- if and (gt (int .Values.replicas) 1) (eq $db "sqlite") -}}
{{- fail "replicas > 1 needs storage.database=postgres: replicas share one PostgreSQL database (SQLite is a file on one volume). Set storage.database=postgres and storage.postgres.url (or storage.postgres.existingSecret)." -}}
{{- end -}}
{{- if and (eq $db "postgres") (not .Values.storage.postgres.url) (not .Values.storage.postgres.existingSecret) -}}
{{- fail "storage.database=postgres needs storage.postgres.url (postgres://user:password@host:5432/den) or storage.postgres.existingSecret (a Secret holding it)." -}}
{{- end -}}
{{- if and .Values.storage.postgres.url (not (hasPrefix "postgres://" .Values.storage.postgres.url)) (not (hasPrefix "postgresql://" .Values.storage.postgres.url)) -}}
{{- fail "storage.postgres.url must be a postgres:// URL, for example postgres://den:password@postgres:5432/den." -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,62}$" .Values.instance) -}}
{{- fail (printf "instance is %q; use lowercase letters, digits and -, for example den-staging." .Values.instance) -}}
{{- end -}}
{{- end -}}
