{{/* Names ---------------------------------------------------------------------------------- */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "herald.secretName" -}}
{{- default (printf "%s-auth" (include "herald.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Labels: (dict "root" $ "component" "node") ----------------------------------------------- */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" .root }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: herald
{{- end -}}

{{- define "herald.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* HERALD_* variables from a settings map (config, <component>.env): lists joined by commas,
     maps as JSON. */}}
{{- define "herald.envValue" -}}
{{- if kindIs "slice" . -}}{{- join "," . -}}
{{- else if kindIs "map" . -}}{{- toJson . -}}
{{- else if kindIs "float64" . -}}{{- if eq (float64 (int64 .)) . -}}{{- int64 . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else -}}{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "herald.envName" -}}
{{- printf "HERALD_%s" (. | replace "-" "_" | upper) -}}
{{- end -}}

{{/* Redis --------------------------------------------------------------------------------- */}}
{{- define "herald.redisUrls" -}}
{{- if eq .Values.redis.mode "bundled" -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.redis.bundled.shards) -}}
{{- $urls = append $urls (printf "redis://%s-redis-%d:%d/0" (include "herald.fullname" $) $i (int $.Values.redis.bundled.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- join "," .Values.redis.urls -}}
{{- end -}}
{{- end -}}

{{/* Node grace period: preStop sleep + drain window + margin. */}}
{{- define "herald.node.gracePeriod" -}}
{{- add (int .Values.node.preStopDelaySeconds) (int (ceil .Values.node.drainWindow)) (int .Values.node.terminationMarginSeconds) -}}
{{- end -}}

{{/* Config checksum: a change of settings or credentials rolls the pods. */}}
{{- define "herald.configChecksum" -}}
{{- list .Values.config .Values.auth .Values.redis.mode .Values.redis.urls .Values.redis.existingSecret (include "herald.redisUrls" .) | toJson | sha256sum -}}
{{- end -}}

{{/* Checks that the schema cannot express. */}}
{{- define "herald.validate" -}}
{{- $alg := .Values.config.jwt_algorithm | default "HS256" -}}
{{- if and (ne $alg "HS256") (not .Values.auth.existingSecret) (not .Values.auth.jwtPublicKey) (not .Values.auth.jwks) -}}
{{- fail (printf "auth: config.jwt_algorithm is %s: set auth.jwtPublicKey (PEM) or auth.jwks, or auth.existingSecret holding one of them" $alg) -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.urls) (not .Values.redis.existingSecret) -}}
{{- fail "redis: mode is external: list one URL per shard in redis.urls, or set redis.existingSecret" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling: minReplicas (%d) is above maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (ge (int .Values.autoscaling.targetConnectionsPerPod) (int .Values.node.maxConnections)) -}}
{{- fail (printf "autoscaling: targetConnectionsPerPod (%d) must be below node.maxConnections (%d), or nodes refuse connections before the autoscaler reacts" (int .Values.autoscaling.targetConnectionsPerPod) (int .Values.node.maxConnections)) -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute: enabled without parentRefs: name the Gateway (httpRoute.parentRefs)" -}}
{{- end -}}
{{- end -}}
